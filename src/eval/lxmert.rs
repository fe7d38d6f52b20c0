//! LXMERT under the benchmark: inputs are region features and token ids; the image test
//! keeps regions in top-k order (spec §E) and pads a batch to its largest kept count with
//! regions no attention reads (`LxmertInputs::region_counts`), down to none at step 1.

use std::collections::BTreeMap;

use crate::backend::{Backend, Cpu};
use crate::eval::runner::{EvalModel, Explained, Keep};
use crate::eval::tokens::{padded_ids, question_ids, HasIds};
use crate::eval::EvalError;
use crate::explain::{Method, MethodOptions};
use crate::input::regions::Regions;
use crate::model::lxmert::{Lxmert, LxmertInputs};
use crate::model::VqaTarget;
use crate::session::lxmert::explain_inputs;
use crate::session::{LxmertSession, SessionError};

/// One question, ready for the model.
pub struct LxmertInput {
    regions: Regions,
    /// [CLS] … [SEP].
    ids: Vec<u32>,
}

impl LxmertInput {
    /// Regions (already checked against the model's feature width) and token ids.
    pub fn new(regions: Regions, ids: Vec<u32>) -> Self {
        Self { regions, ids }
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

    fn answers(&self) -> &[String] {
        self.answers
    }

    /// Explains samples with equal region counts together (the explanations read every
    /// region of the batch).
    fn explain(
        &self,
        inputs: &[&LxmertInput],
        methods: &[Method],
        opts: &MethodOptions,
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
            let (output, explanations) = explain_inputs(
                self.backend,
                self.model,
                &x,
                methods,
                opts,
                &VqaTarget::Predicted,
            )?;
            for ((&i, predicted), explanations) in
                members.iter().zip(output.predicted()).zip(explanations)
            {
                out[i] = Some(Explained {
                    predicted,
                    explanations,
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|e| e.expect("every sample is in a group"))
            .collect())
    }

    fn predict(&self, items: &[(&LxmertInput, &Keep)]) -> Result<Vec<usize>, EvalError> {
        let x = self.batch(items);
        let output = self
            .model
            .logits(self.backend, &x)
            .map_err(SessionError::from)?;
        Ok(output.predicted())
    }
}

impl<B: Backend> LxmertEval<'_, B> {
    fn batch(&self, items: &[(&LxmertInput, &Keep)]) -> LxmertInputs {
        let c = &self.model.config;
        let (f, b) = (c.visual_feat_dim, c.visual_pos_dim);
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
