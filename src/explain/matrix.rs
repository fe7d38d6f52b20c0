//! Small dense square matrices for the relevance recurrences: one sample's tokens, row-major.

use crate::backend::cpu::matmul::{gemm, Mat};

/// An n×n row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Square {
    pub n: usize,
    pub data: Vec<f32>,
}

impl Square {
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            data: vec![0.0; n * n],
        }
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n);
        for i in 0..n {
            m.data[i * n + i] = 1.0;
        }
        m
    }

    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.n + j]
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    /// self · rhs.
    pub fn matmul(&self, rhs: &Square) -> Square {
        let n = self.n;
        let mut out = Square::zeros(n);
        // SAFETY: all three buffers hold n×n values and `out` is fresh.
        unsafe {
            gemm(
                n,
                n,
                n,
                out.data.as_mut_ptr(),
                n,
                false,
                Mat::rows(&self.data, n),
                Mat::rows(&rhs.data, n),
                1.0,
                true,
            );
        }
        out
    }

    /// self · v.
    pub fn matvec(&self, v: &[f32]) -> Vec<f32> {
        (0..self.n)
            .map(|i| self.row(i).iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    }

    pub fn add_assign(&mut self, rhs: &Square) {
        for (a, b) in self.data.iter_mut().zip(&rhs.data) {
            *a += b;
        }
    }

    /// The submatrix of the given rows and columns, in that order.
    pub fn select(&self, rows: &[usize], cols: &[usize]) -> Square {
        debug_assert_eq!(rows.len(), cols.len());
        let mut out = Square::zeros(rows.len());
        for (r, &i) in rows.iter().enumerate() {
            for (c, &j) in cols.iter().enumerate() {
                out.data[r * rows.len() + c] = self.at(i, j);
            }
        }
        out
    }
}
