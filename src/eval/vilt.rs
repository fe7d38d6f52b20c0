//! ViLT under the benchmark: inputs are preprocessed pixels and token ids; the image test
//! deletes patches from the sequence (`ViltInputs::kept_patches`, raster order), the text
//! test deletes tokens (the rest get contiguous positions).

use std::path::Path;

use crate::backend::Backend;
use crate::eval::runner::{Answering, EvalModel, Explained, Keep};
use crate::eval::tokens::{padded_ids, question_ids, HasIds};
use crate::eval::EvalError;
use crate::explain::{Method, MethodOptions};
use crate::input::vilt::{pad_batch, patch_grid};
use crate::model::vilt::ViltInputs;
use crate::model::VqaTarget;
use crate::session::{SessionError, ViltSession};

/// One question, ready for the model.
pub struct ViltInput {
    /// Preprocessed pixels [3, height, width].
    pixels: Vec<f32>,
    height: usize,
    width: usize,
    /// [CLS] … [SEP].
    ids: Vec<u32>,
}

impl<B: Backend> EvalModel for ViltSession<B> {
    type Input = ViltInput;

    fn explain(
        &self,
        inputs: &[&ViltInput],
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<Vec<Explained>, EvalError> {
        let keeps = vec![Keep::All; inputs.len()];
        let x = self.batch(inputs.iter().copied().zip(&keeps));
        let (output, explanations) = self.explain_inputs(&x, methods, opts, target)?;
        Ok(output
            .predicted()
            .into_iter()
            .zip(explanations)
            .map(|(predicted, explanations)| Explained {
                predicted: Some(predicted),
                explanations,
            })
            .collect())
    }

    fn answering(&self) -> Option<&dyn Answering<ViltInput>> {
        Some(self)
    }
}

impl<B: Backend> Answering<ViltInput> for ViltSession<B> {
    fn answers(&self) -> &[String] {
        &self.model().config.id2label
    }

    fn predict(&self, items: &[(&ViltInput, &Keep)]) -> Result<Vec<usize>, EvalError> {
        let x = self.batch(items.iter().copied());
        let output = self
            .model()
            .logits(self.backend(), &x)
            .map_err(SessionError::from)?;
        Ok(output.predicted())
    }
}

impl<B: Backend> ViltSession<B> {
    /// Reads and preprocesses one image and tokenizes its question.
    pub fn eval_input(&self, image: &Path, question: &str) -> Result<ViltInput, EvalError> {
        let (pixels, height, width) = self
            .processor()
            .preprocess_file(image)
            .map_err(SessionError::from)?;
        self.check_whole_patches(&image.display().to_string(), height, width)?;
        Ok(ViltInput {
            pixels,
            height,
            width,
            ids: question_ids(self.tokenizer(), question)?,
        })
    }

    fn batch<'a>(&self, items: impl Iterator<Item = (&'a ViltInput, &'a Keep)>) -> ViltInputs {
        let items: Vec<_> = items.collect();
        let images: Vec<(&[f32], usize, usize)> = items
            .iter()
            .map(|(x, _)| (x.pixels.as_slice(), x.height, x.width))
            .collect();
        let pixels = pad_batch(&images);
        let patch = self.model().config.patch_size;
        let deletes_patches = items.iter().any(|(_, k)| matches!(k, Keep::Image(_)));
        let kept_patches = deletes_patches.then(|| {
            items
                .iter()
                .map(|(x, k)| match k {
                    Keep::Image(kept) => {
                        let mut kept = kept.clone();
                        kept.sort_unstable();
                        kept
                    }
                    _ => {
                        let (rows, cols) = patch_grid(x.height, x.width, patch);
                        (0..rows * cols).collect()
                    }
                })
                .collect()
        });
        let (ids, lengths, seq_len) = padded_ids(&items, self.tokenizer().pad_id());
        ViltInputs {
            pixels: pixels.data,
            pixel_mask: pixels.mask,
            height: pixels.height,
            width: pixels.width,
            ids,
            lengths,
            seq_len,
            kept_patches,
        }
    }
}

impl HasIds for ViltInput {
    fn ids(&self) -> &[u32] {
        &self.ids
    }
}
