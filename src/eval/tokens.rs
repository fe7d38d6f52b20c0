//! Question tokens for both families: tokenizing once, and the kept tokens of perturbed
//! inputs, right-padded into a batch.

use crate::eval::runner::Keep;
use crate::eval::EvalError;
use crate::input::text::TextTokenizer;
use crate::session::SessionError;

/// A question's token ids ([CLS] … [SEP]); it needs a word between the two.
pub(crate) fn question_ids(
    tokenizer: &TextTokenizer,
    question: &str,
) -> Result<Vec<u32>, EvalError> {
    let tokens = tokenizer
        .encode_batch(&[question])
        .map_err(SessionError::from)?;
    let len = tokens.lengths[0];
    if len <= 2 {
        return Err(EvalError::NoWords(question.to_owned()));
    }
    Ok(tokens.row(0)[..len].to_vec())
}

/// Inputs that carry a question's token ids.
pub(crate) trait HasIds {
    fn ids(&self) -> &[u32];
}

/// Token ids of perturbed items (the kept positions only, which so get contiguous
/// positions), right-padded: ids, lengths, seq_len.
pub(crate) fn padded_ids<T: HasIds>(
    items: &[(&T, &Keep)],
    pad: u32,
) -> (Vec<u32>, Vec<usize>, usize) {
    let rows: Vec<Vec<u32>> = items
        .iter()
        .map(|(x, k)| match k {
            Keep::Text(kept) => kept.iter().map(|&p| x.ids()[p]).collect(),
            _ => x.ids().to_vec(),
        })
        .collect();
    let seq_len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * seq_len);
    for row in &rows {
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(pad, seq_len - row.len()));
    }
    (ids, rows.iter().map(Vec::len).collect(), seq_len)
}
