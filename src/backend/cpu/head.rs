//! The CLIP head: scaled cosine similarity of paired embeddings, and its gradient.

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub(crate) fn cosine_scores(scores: &mut [f32], a: &[f32], b: &[f32], scale: f32, dim: usize) {
    for ((s, a), b) in scores
        .iter_mut()
        .zip(a.chunks_exact(dim))
        .zip(b.chunks_exact(dim))
    {
        *s = (scale as f64 * dot(a, b) / (norm(a) * norm(b))) as f32;
    }
}

/// ∂(s·â·b̂)/∂a = s/|a|·(b̂ − (â·b̂)·â), and symmetrically for b.
pub(crate) fn cosine_scores_backward(
    da: &mut [f32],
    db: &mut [f32],
    dscores: &[f32],
    a: &[f32],
    b: &[f32],
    scale: f32,
    dim: usize,
) {
    let rows = da.chunks_exact_mut(dim).zip(db.chunks_exact_mut(dim));
    for ((((da, db), &ds), a), b) in rows
        .zip(dscores)
        .zip(a.chunks_exact(dim))
        .zip(b.chunks_exact(dim))
    {
        let (na, nb) = (norm(a), norm(b));
        let cos = dot(a, b) / (na * nb);
        let g = ds as f64 * scale as f64;
        for i in 0..dim {
            let (ai, bi) = (a[i] as f64 / na, b[i] as f64 / nb);
            da[i] = (g / na * (bi - cos * ai)) as f32;
            db[i] = (g / nb * (ai - cos * bi)) as f32;
        }
    }
}
