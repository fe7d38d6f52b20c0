//! Readout rows (`ReadoutRow`: a sample, its token positions, the row read) as the kernels of
//! `relevance_rows` and `head_rows` take them: row k's tokens and outputs at
//! start[k] .. start[k + 1] of flat arrays.

use cudarc::driver::CudaSlice;

use super::{int, Cuda};
use crate::backend::{ReadoutRow, Result};

pub(super) struct RowTable {
    pub sample: Vec<i32>,
    pub query: Vec<i32>,
    pub start: Vec<i32>,
    pub tokens: Vec<i32>,
}

/// A `RowTable` on the device.
pub(super) struct DeviceRows {
    pub sample: CudaSlice<i32>,
    pub query: CudaSlice<i32>,
    pub start: CudaSlice<i32>,
    pub tokens: CudaSlice<i32>,
}

impl RowTable {
    pub fn new(op: &'static str, rows: &[ReadoutRow<'_>]) -> Result<Self> {
        let mut table = RowTable {
            sample: Vec::with_capacity(rows.len()),
            query: Vec::with_capacity(rows.len()),
            start: vec![0],
            tokens: Vec::new(),
        };
        for r in rows {
            table.sample.push(int(op, r.sample)?);
            table.query.push(int(op, r.query)?);
            for &t in r.tokens {
                table.tokens.push(int(op, t)?);
            }
            table.start.push(int(op, table.tokens.len())?);
        }
        Ok(table)
    }

    pub fn upload(&self, cuda: &Cuda, op: &'static str) -> Result<DeviceRows> {
        Ok(DeviceRows {
            sample: cuda.upload_any(op, &self.sample)?,
            query: cuda.upload_any(op, &self.query)?,
            start: cuda.upload_any(op, &self.start)?,
            tokens: cuda.upload_any(op, &self.tokens)?,
        })
    }

    /// The spans of each row's entries in a flat output of `per_token` values per token.
    pub fn spans(&self, per_token: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.start
            .windows(2)
            .map(move |w| w[0] as usize * per_token..w[1] as usize * per_token)
    }

    /// The longest row's token count.
    pub fn longest(&self) -> usize {
        self.spans(1).map(|s| s.len()).max().unwrap_or(0)
    }
}
