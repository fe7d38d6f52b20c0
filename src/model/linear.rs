//! A linear layer's uploaded weight and bias, and |W| for the LRP linear rule, built on first
//! use so that models that never run LRP do not pay its memory.

use std::sync::OnceLock;

use crate::backend::Backend;
use crate::model::ModelError;

/// `(weight from upload_weight [out, in], bias [out], |weight| cache)`.
pub struct Linear<B: Backend>(pub B::Buf, pub B::Buf, OnceLock<B::Buf>);

impl<B: Backend> Linear<B> {
    pub fn new(weight: B::Buf, bias: B::Buf) -> Self {
        Self(weight, bias, OnceLock::new())
    }

    /// |W|, uploaded on first use.
    pub fn abs(&self, be: &B) -> Result<&B::Buf, ModelError> {
        if let Some(w) = self.2.get() {
            return Ok(w);
        }
        let w = be.abs_weight(&self.0)?;
        Ok(self.2.get_or_init(|| w))
    }

    /// LRP z⁺ rule: relevance at the input x [m, k] from relevance r at the output [m, n].
    /// `out` is this layer's forward output (with bias) when the forward kept it.
    #[allow(clippy::too_many_arguments)]
    pub fn relprop(
        &self,
        be: &B,
        r: &B::Buf,
        x: &B::Buf,
        out: Option<&B::Buf>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<B::Buf, ModelError> {
        let mut rx = be.uninit(m * k)?;
        let forward = out.map(|o| (o, &self.1));
        be.lrp_linear(
            &mut rx,
            r,
            x,
            forward,
            &self.0,
            self.abs(be)?,
            m,
            k,
            n,
            false,
        )?;
        Ok(rx)
    }
}
