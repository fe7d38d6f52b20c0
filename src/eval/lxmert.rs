//! LXMERT under the benchmark: inputs are region features and token ids; the image test
//! keeps regions in top-k order (spec §E) and pads a batch to its largest kept count with
//! regions no attention reads (`LxmertInputs::region_counts`), down to none at step 1.
//!
//! A perturbed input changes one modality only, and LXMERT's language and
//! object-relationship stacks each see one modality: an image step's language stack, and a
//! text step's object-relationship stack, compute what they computed for the unperturbed
//! sample. Each sample's two stack outputs are computed once (`LxmertInput::stacks`) and
//! given to the perturbed forwards (`Lxmert::logits_given`), which run the other stack and
//! the cross layers only.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::backend::{Backend, Cpu};
use crate::eval::runner::{Answering, EvalModel, Explained, Keep};
use crate::eval::tokens::{padded_ids, question_ids, HasIds};
use crate::eval::EvalError;
use crate::explain::{Method, MethodOptions};
use crate::input::regions::{Regions, BOX_LEN};
use crate::model::lxmert::{GivenStacks, Lxmert, LxmertInputs};
use crate::model::{ModelError, VqaTarget};
use crate::session::lxmert::explain_inputs;
use crate::session::{LxmertSession, SessionError};

/// One question, ready for the model.
pub struct LxmertInput {
    regions: Regions,
    /// [CLS] … [SEP].
    ids: Vec<u32>,
    /// The unperturbed sample's stack outputs, once a perturbed forward needed them.
    stacks: OnceLock<SampleStacks>,
}

/// One sample's language-stack output (its tokens × hidden) and object-relationship-stack
/// output (its regions × hidden), in host memory.
struct SampleStacks {
    text: Vec<f32>,
    image: Vec<f32>,
}

impl LxmertInput {
    /// Regions (already checked against the model's feature width) and token ids.
    pub fn new(regions: Regions, ids: Vec<u32>) -> Self {
        Self {
            regions,
            ids,
            stacks: OnceLock::new(),
        }
    }
}

impl HasIds for LxmertInput {
    fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// A loaded LXMERT and what the benchmark needs beside it.
pub struct LxmertEval<'a, B: Backend = Cpu> {
    pub backend: &'a B,
    pub model: &'a Lxmert<B>,
    /// One per logit.
    pub answers: &'a [String],
    /// The tokenizer's padding id.
    pub pad_id: u32,
}

impl<B: Backend> LxmertSession<B> {
    pub fn evaluator(&self) -> LxmertEval<'_, B> {
        LxmertEval {
            backend: self.backend(),
            model: self.model(),
            answers: self.answers(),
            pad_id: self.tokenizer().pad_id(),
        }
    }

    /// Checks one question's regions against the model and tokenizes its question.
    pub fn eval_input(&self, regions: Regions, question: &str) -> Result<LxmertInput, EvalError> {
        regions
            .check_dim(self.model().config.visual_feat_dim)
            .map_err(SessionError::from)?;
        Ok(LxmertInput::new(
            regions,
            question_ids(self.tokenizer(), question)?,
        ))
    }
}

impl<B: Backend> EvalModel for LxmertEval<'_, B> {
    type Input = LxmertInput;

    /// Explains samples with equal region counts together (the explanations read every
    /// region of the batch).
    fn explain(
        &self,
        inputs: &[&LxmertInput],
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<Vec<Explained>, EvalError> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, x) in inputs.iter().enumerate() {
            groups.entry(x.regions.count).or_default().push(i);
        }
        let mut out: Vec<Option<Explained>> = (0..inputs.len()).map(|_| None).collect();
        for members in groups.values() {
            let items: Vec<(&LxmertInput, &Keep)> =
                members.iter().map(|&i| (inputs[i], &Keep::All)).collect();
            let mut x = self.batch(&items);
            x.region_counts = None;
            let (output, explanations) =
                explain_inputs(self.backend, self.model, &x, methods, opts, target)?;
            for ((&i, predicted), explanations) in
                members.iter().zip(output.predicted()).zip(explanations)
            {
                out[i] = Some(Explained {
                    predicted: Some(predicted),
                    explanations,
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|e| e.expect("every sample is in a group"))
            .collect())
    }

    fn answering(&self) -> Option<&dyn Answering<LxmertInput>> {
        Some(self)
    }
}

impl<B: Backend> Answering<LxmertInput> for LxmertEval<'_, B> {
    fn answers(&self) -> &[String] {
        self.answers
    }

    /// One forward per kind of perturbation in `items`, each given the stack output of the
    /// modality it leaves whole.
    fn predict(&self, items: &[(&LxmertInput, &Keep)]) -> Result<Vec<usize>, EvalError> {
        self.compute_stacks(items)?;
        let mut predicted = vec![0; items.len()];
        let kinds: [fn(&Keep) -> bool; 3] = [
            |k| matches!(k, Keep::Text(_)),
            |k| matches!(k, Keep::Image(_)),
            |k| matches!(k, Keep::All),
        ];
        for kind in kinds {
            let members: Vec<usize> = (0..items.len()).filter(|&i| kind(items[i].1)).collect();
            if members.is_empty() {
                continue;
            }
            let group: Vec<(&LxmertInput, &Keep)> = members.iter().map(|&i| items[i]).collect();
            let x = self.batch(&group);
            let given = self.given(&group, &x)?;
            let output = self
                .model
                .logits_given(self.backend, &x, given)
                .map_err(SessionError::from)?;
            for (&i, answer) in members.iter().zip(output.predicted()) {
                predicted[i] = answer;
            }
        }
        Ok(predicted)
    }
}

impl<B: Backend> LxmertEval<'_, B> {
    /// Computes, in one batch, the stack outputs of the inputs among `items` that have none
    /// yet.
    fn compute_stacks(&self, items: &[(&LxmertInput, &Keep)]) -> Result<(), EvalError> {
        let mut missing: Vec<&LxmertInput> = Vec::new();
        for &(x, _) in items {
            if x.stacks.get().is_none() && !missing.iter().any(|m| std::ptr::eq(*m, x)) {
                missing.push(x);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let whole: Vec<(&LxmertInput, &Keep)> = missing.iter().map(|&x| (x, &Keep::All)).collect();
        let x = self.batch(&whole);
        let stacks = self
            .model
            .stack_outputs(self.backend, &x)
            .map_err(SessionError::from)?;
        let download = |buf| {
            let host = self.backend.move_to_host(buf);
            host.map_err(|e| SessionError::from(ModelError::from(e)))
        };
        let (text, image) = (download(stacks.text)?, download(stacks.image)?);
        let d = self.model.config.hidden_size;
        let (t, n) = (x.seq_len * d, x.regions * d);
        for (s, input) in missing.iter().enumerate() {
            let sample = SampleStacks {
                text: text[s * t..s * t + input.ids.len() * d].to_vec(),
                image: image[s * n..s * n + input.regions.count * d].to_vec(),
            };
            // Another thread may have set it meanwhile, to the same values.
            let _ = input.stacks.set(sample);
        }
        Ok(())
    }

    /// The stack outputs `group` (inputs perturbed in one way, laid out as `x`) leaves
    /// whole: the text stack's for image steps, the image stack's for text steps, padded as
    /// `x` pads its tokens and regions (padding rows are masked keys, and no real row reads
    /// them as queries).
    fn given(
        &self,
        group: &[(&LxmertInput, &Keep)],
        x: &LxmertInputs,
    ) -> Result<GivenStacks<B::Buf>, EvalError> {
        let d = self.model.config.hidden_size;
        // Given stacks only spare work: an input without its stacks (`compute_stacks` runs
        // first, so none should lack them) has the forward run them all, with the same result.
        let Some(stacks) = group
            .iter()
            .map(|(input, _)| input.stacks.get())
            .collect::<Option<Vec<&SampleStacks>>>()
        else {
            return Ok(GivenStacks::none());
        };
        let padded = |rows: usize, part: fn(&SampleStacks) -> &[f32]| {
            let mut out = vec![0.0f32; group.len() * rows * d];
            for (stacks, slot) in stacks.iter().zip(out.chunks_exact_mut(rows * d)) {
                let values = part(stacks);
                slot[..values.len()].copy_from_slice(values);
            }
            self.backend
                .upload(&out)
                .map_err(|e| SessionError::from(ModelError::from(e)))
        };
        let mut given = GivenStacks::none();
        match group.first().map(|(_, k)| k) {
            Some(Keep::Image(_)) => given.text = Some(padded(x.seq_len, |s| &s.text)?),
            Some(Keep::Text(_)) => given.image = Some(padded(x.regions, |s| &s.image)?),
            _ => {}
        }
        Ok(given)
    }

    fn batch(&self, items: &[(&LxmertInput, &Keep)]) -> LxmertInputs {
        let c = &self.model.config;
        let (f, b) = (c.visual_feat_dim, BOX_LEN);
        let orders: Vec<Vec<usize>> = items
            .iter()
            .map(|(x, k)| match k {
                Keep::Image(kept) => kept.clone(),
                _ => (0..x.regions.count).collect(),
            })
            .collect();
        // At least one row: a batch that keeps no region still needs a (masked) one.
        let n = orders.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut features = vec![0.0f32; items.len() * n * f];
        let mut boxes = vec![0.0f32; items.len() * n * b];
        for (s, ((x, _), order)) in items.iter().zip(&orders).enumerate() {
            for (slot, &r) in order.iter().enumerate() {
                let row = s * n + slot;
                features[row * f..(row + 1) * f]
                    .copy_from_slice(&x.regions.features[r * f..(r + 1) * f]);
                boxes[row * b..(row + 1) * b].copy_from_slice(&x.regions.boxes[r * b..(r + 1) * b]);
            }
        }
        let (ids, lengths, seq_len) = padded_ids(items, self.pad_id);
        LxmertInputs {
            features,
            boxes,
            regions: n,
            region_counts: Some(orders.iter().map(Vec::len).collect()),
            ids,
            lengths,
            seq_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::input::regions::load_regions;

    /// Each sample's stack outputs, computed in one batch of questions of different lengths
    /// and images of different region counts, are its own: as computed for it alone.
    #[test]
    fn stacks_computed_together_are_each_samples_own() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lxmert");
        let session = LxmertSession::open(&dir, None).unwrap();
        let regions = |image: &str, keep: usize| {
            let path = dir.join(format!("regions_{image}.safetensors"));
            let mut r = load_regions(&path, None).unwrap();
            r.features.truncate(keep * r.dim);
            r.boxes.truncate(keep * 4);
            r.count = keep;
            r
        };
        let inputs = [
            session.eval_input(regions("synth_000001", 10), "what color is the dog?"),
            session.eval_input(regions("synth_000002", 6), "is the man holding a plate?"),
            session.eval_input(regions("synth_000003", 8), "how many?"),
        ]
        .map(Result::unwrap);
        let eval = session.evaluator();
        let (text, image) = (Keep::Text(vec![0, 1, 3]), Keep::Image(vec![2, 0]));
        let items: Vec<(&LxmertInput, &Keep)> = vec![
            (&inputs[1], &text),
            (&inputs[0], &image),
            (&inputs[2], &Keep::All),
            (&inputs[1], &image),
        ];
        eval.compute_stacks(&items).unwrap();
        let d = session.model().config.hidden_size;
        for x in &inputs {
            let alone = LxmertInput::new(x.regions.clone(), x.ids.clone());
            eval.compute_stacks(&[(&alone, &Keep::All)]).unwrap();
            let (ours, theirs) = (x.stacks.get().unwrap(), alone.stacks.get().unwrap());
            assert_eq!(ours.text.len(), x.ids.len() * d);
            assert_eq!(ours.image.len(), x.regions.count * d);
            for (what, a, b) in [
                ("text", &ours.text, &theirs.text),
                ("image", &ours.image, &theirs.image),
            ] {
                let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = a
                    .iter()
                    .zip(b)
                    .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                assert!(
                    err <= 1e-6 * scale,
                    "{what} stack of {:?}: off by {err:e}",
                    x.ids
                );
            }
        }
    }
}
