//! Fiedler vectors of graphs whose features are rows of device buffers (a trace's layer
//! outputs): solved where they are (`Cuda::fiedler_batch_buffers`, one call for every
//! buffer), so only the vectors come back to the host. The dense solver, which runs on the CPU, gets the
//! rows brought over, once per buffer.

use std::collections::HashMap;

use cudarc::driver::CudaSlice;

use super::spectral::BufferGraph;
use super::Cuda;
use crate::backend::cpu::fiedler_of_rows;
use crate::backend::{check, Backend, Result};
use crate::linalg::{Fiedler, GraphOptions, Solver, SpectralError};

type Solved = std::result::Result<Fiedler, SpectralError>;

impl Cuda {
    pub(super) fn fiedler_of_rows(
        &self,
        graphs: &[(&CudaSlice<f32>, &[usize])],
        dim: usize,
        opts: &GraphOptions,
    ) -> Result<Vec<Solved>> {
        let lens: Vec<(usize, &[usize])> = graphs.iter().map(|(b, r)| (b.len(), *r)).collect();
        check::graph_rows(dim, &lens)?;
        let ascending = graphs
            .iter()
            .all(|(_, r)| r.windows(2).all(|w| w[0] < w[1]));
        if opts.solver == Solver::Dense || !ascending {
            return self.fiedler_of_rows_on_host(graphs, dim, opts);
        }
        // Ascending rows as a span from the first with a mask over the gaps; the graphs of
        // every buffer in one call.
        let masks: Vec<(usize, Vec<bool>)> = graphs.iter().map(|(_, rows)| span(rows)).collect();
        let spans: Vec<BufferGraph<'_>> = graphs
            .iter()
            .zip(&masks)
            .map(|((buf, _), (first, mask))| (*buf, *first, mask.as_slice()))
            .collect();
        let results = self.fiedler_batch_buffers(dim, &spans, opts.l2_normalize)?;
        Ok(results
            .into_iter()
            .zip(&masks)
            .map(|(r, (_, mask))| r.map(|f| compact(f, mask)))
            .collect())
    }

    fn fiedler_of_rows_on_host(
        &self,
        graphs: &[(&CudaSlice<f32>, &[usize])],
        dim: usize,
        opts: &GraphOptions,
    ) -> Result<Vec<Solved>> {
        let mut host: HashMap<u64, Vec<f32>> = HashMap::new();
        for (buf, _) in graphs {
            if let std::collections::hash_map::Entry::Vacant(e) = host.entry(self.ptr(buf)) {
                e.insert(self.download(buf)?);
            }
        }
        let graphs: Vec<(&[f32], &[usize])> = graphs
            .iter()
            .map(|(buf, rows)| (host[&self.ptr(buf)].as_slice(), *rows))
            .collect();
        Ok(fiedler_of_rows(&graphs, dim, opts))
    }
}

/// Ascending rows as (first row, mask over first..=last).
fn span(rows: &[usize]) -> (usize, Vec<bool>) {
    let Some((&first, &last)) = rows.first().zip(rows.last()) else {
        return (0, Vec::new());
    };
    let mut mask = vec![false; last - first + 1];
    rows.iter().for_each(|&r| mask[r - first] = true);
    (first, mask)
}

/// A span's solution with one entry per row that took part, in row order.
fn compact(f: Fiedler, mask: &[bool]) -> Fiedler {
    if mask.iter().all(|&m| m) {
        return f;
    }
    let keep = |v: Vec<f32>| -> Vec<f32> {
        v.into_iter()
            .zip(mask)
            .filter_map(|(x, &m)| m.then_some(x))
            .collect()
    };
    Fiedler {
        vector: keep(f.vector),
        signed: keep(f.signed),
        ..f
    }
}
