//! Small dense matrices for the relevance recurrences (one sample's tokens), row-major f32.

use crate::backend::cpu::matmul::{gemm, Mat};

#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n, n);
        m.add_identity();
        m
    }

    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// self · rhs.
    pub fn matmul(&self, rhs: &Matrix) -> Matrix {
        assert_eq!(
            self.cols, rhs.rows,
            "matrix product of {}×{} and {}×{}",
            self.rows, self.cols, rhs.rows, rhs.cols
        );
        let mut out = Matrix::zeros(self.rows, rhs.cols);
        // SAFETY: the operands hold rows×cols values each and `out` is fresh.
        unsafe {
            gemm(
                self.rows,
                rhs.cols,
                self.cols,
                out.data.as_mut_ptr(),
                rhs.cols,
                false,
                Mat::rows(&self.data, self.cols),
                Mat::rows(&rhs.data, rhs.cols),
                1.0,
                true,
            );
        }
        out
    }

    /// self · v.
    pub fn matvec(&self, v: &[f32]) -> Vec<f32> {
        (0..self.rows)
            .map(|i| self.row(i).iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    }

    pub fn transpose(&self) -> Matrix {
        let mut t = Matrix::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                t.data[j * self.rows + i] = self.at(i, j);
            }
        }
        t
    }

    pub fn add_assign(&mut self, rhs: &Matrix) {
        for (a, b) in self.data.iter_mut().zip(&rhs.data) {
            *a += b;
        }
    }

    /// Adds 1 on the diagonal (square matrices).
    pub fn add_identity(&mut self) {
        for i in 0..self.rows.min(self.cols) {
            self.data[i * self.cols + i] += 1.0;
        }
    }

    /// Divides each row by its sum; a row summing to 0 stays as it is (no 0/0).
    pub fn row_normalize(&mut self) {
        for row in self.data.chunks_exact_mut(self.cols) {
            let sum: f32 = row.iter().sum();
            if sum != 0.0 {
                row.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }

    /// (x − min)/(max − min) over every entry; a constant matrix becomes 0 (no 0/0).
    pub fn min_max(&mut self) {
        min_max(&mut self.data);
    }

    /// The submatrix of the given rows and columns, in that order.
    pub fn select(&self, rows: &[usize], cols: &[usize]) -> Matrix {
        let mut out = Matrix::zeros(rows.len(), cols.len());
        for (r, &i) in rows.iter().enumerate() {
            for (c, &j) in cols.iter().enumerate() {
                out.data[r * cols.len() + c] = self.at(i, j);
            }
        }
        out
    }
}

/// (x − min)/(max − min) in f32, as torch computes the references' normalisations; a
/// constant slice becomes 0 (where they divide 0 by 0).
pub fn min_max(values: &mut [f32]) {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = hi - lo;
    for x in values {
        *x = if range > 0.0 { (*x - lo) / range } else { 0.0 };
    }
}
