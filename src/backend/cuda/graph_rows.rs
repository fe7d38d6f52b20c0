//! Fiedler vectors of graphs whose features are rows of device buffers (a trace's layer
//! outputs): the rows are brought to the host once per buffer, packed, and solved by the
//! batched GPU solver (`Cuda::fiedler_batch`), or by the CPU's dense solver when asked.

use std::collections::HashMap;

use cudarc::driver::CudaSlice;

use super::Cuda;
use crate::backend::cpu::gather;
use crate::backend::{check, Backend, Result};
use crate::linalg::{fiedler_batch, Fiedler, GraphInput, GraphOptions, Solver, SpectralError};

impl Cuda {
    pub(super) fn fiedler_of_rows(
        &self,
        graphs: &[(&CudaSlice<f32>, &[usize])],
        dim: usize,
        opts: &GraphOptions,
    ) -> Result<Vec<std::result::Result<Fiedler, SpectralError>>> {
        let lens: Vec<(usize, &[usize])> = graphs.iter().map(|(b, r)| (b.len(), *r)).collect();
        check::graph_rows(dim, &lens)?;
        // Graphs of one layer share its output: one download per buffer.
        let mut host: HashMap<u64, Vec<f32>> = HashMap::new();
        for (buf, _) in graphs {
            let key = self.ptr(buf);
            if !host.contains_key(&key) {
                host.insert(key, self.download(buf)?);
            }
        }
        let features: Vec<Vec<f32>> = graphs
            .iter()
            .map(|(buf, rows)| gather(&host[&self.ptr(buf)], rows, dim))
            .collect();
        let masks: Vec<Vec<bool>> = graphs.iter().map(|(_, r)| vec![true; r.len()]).collect();
        let inputs: Vec<GraphInput> = features
            .iter()
            .zip(&masks)
            .map(|(f, mask)| GraphInput {
                features: f,
                rows: mask.len(),
                dim,
                mask,
            })
            .collect();
        match opts.solver {
            Solver::Lanczos => self.fiedler_batch(&inputs, opts.l2_normalize),
            Solver::Dense => Ok(fiedler_batch(&inputs, opts)),
        }
    }
}
