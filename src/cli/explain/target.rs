//! VQA targets and expected answers: what `--target` names among the model's answers, and the
//! answer a `--pairs` line expects, with whether the model gave it.

use std::collections::HashSet;

use anyhow::{anyhow, bail};

use fiedler::eval::answers::clean;
use fiedler::explain::Method;
use fiedler::model::config::unnamed_answers;
use fiedler::session::{answer_hint, find_answer, AnswerTarget, SessionError};

/// The answer a `--pairs` line expects of a VQA model.
pub(super) struct Expected {
    pub(super) answer: String,
    /// Whether the model's answer is it, once both are cleaned as VQA accuracy cleans them
    /// (punctuation, number words, articles).
    pub(super) correct: bool,
}

/// Warns, in one line, of the expected answers that match none of the model's answers
/// (compared as `Expected` compares them): they can never be right. Each is named by its
/// --pairs line (`lines`). Not where the answers are unnamed (LXMERT without --answers,
/// already warned of): none would match.
pub(super) fn warn_of_answers_never_given(
    expected: &[Option<String>],
    lines: &[Option<String>],
    answers: &[String],
) {
    if unnamed_answers(answers) {
        return;
    }
    let known: HashSet<String> = answers.iter().map(|a| clean(a)).collect();
    let never: Vec<String> = expected
        .iter()
        .zip(lines)
        .filter_map(|(a, line)| Some((a.as_ref()?, line.as_ref()?)))
        .filter(|(a, _)| !known.contains(&clean(a)))
        .map(|(a, line)| format!("{line}: {a:?}"))
        .collect();
    if let Some(first) = never.first() {
        let shown = match never.len() {
            1 => first.clone(),
            n if n <= 5 => never.join(", "),
            n => format!("{} and {} more", never[..5].join(", "), n - 5),
        };
        eprintln!(
            "warning: expected {} not among the model's {} answers, so it cannot be right ({shown})",
            if never.len() == 1 { "answer" } else { "answers" },
            answers.len()
        );
    }
}

impl Expected {
    pub(super) fn new(answer: String, given: &str) -> Self {
        let correct = clean(&answer) == clean(given);
        Self { answer, correct }
    }

    /// "expected: cross (right)".
    pub(super) fn describe(&self) -> String {
        let verdict = if self.correct { "right" } else { "wrong" };
        format!("expected: {} ({verdict})", self.answer)
    }
}

/// The target `--target` names, of the model's `answers`: `expected` is each --pairs line's
/// answer (`expected`, with its `lines`), found as `AnswerTarget::parse` finds an answer, else
/// as VQA accuracy compares answers ("Two" is "2").
pub(super) fn vqa_target(
    spec: &str,
    expected: &[Option<String>],
    lines: &[Option<String>],
    answers: &[String],
) -> anyhow::Result<AnswerTarget> {
    if !spec.trim().eq_ignore_ascii_case("expected") {
        return AnswerTarget::parse(spec, answers).map_err(|e| match e {
            // The library's list lacks the CLI's own target (its hint for `seed` stands).
            SessionError::BadTarget(spec) if !spec.trim().eq_ignore_ascii_case("seed") => {
                anyhow::anyhow!("--target {spec:?}: expected predicted, answer:TEXT, index:N, expected (each --pairs line's \"answer\") or sum-logits")
            }
            e => e.into(),
        });
    }
    if lines.iter().any(Option::is_none) {
        bail!("--target expected explains the \"answer\" of each --pairs line; for questions given with --question, name the answer: --target answer:TEXT");
    }
    if unnamed_answers(answers) {
        bail!("--target expected: the model's answers have no names to find the lines' answers among; give --answers FILE");
    }
    let found: Vec<anyhow::Result<usize>> = expected
        .iter()
        .map(|answer| match answer {
            Some(answer) => expected_index(answer, answers),
            None => Err(anyhow!(
                "no \"answer\" to explain (it explains each line's \"answer\")"
            )),
        })
        .collect();
    // Every line at fault at once, so that a long file is mended in one pass.
    let wrong: Vec<String> = found
        .iter()
        .zip(lines.iter().flatten())
        .filter_map(|(index, at)| Some(format!("{at}: {}", index.as_ref().err()?)))
        .collect();
    match wrong.as_slice() {
        [] => Ok(AnswerTarget::Each(found.into_iter().flatten().collect())),
        [one] => bail!("--target expected: {one}"),
        many => {
            let shown = many.len().min(MAX_LINES_SHOWN);
            let more = match many.len() - shown {
                0 => String::new(),
                k => format!("\n  and {k} more"),
            };
            bail!(
                "--target expected: {} lines cannot be explained:\n  {}{more}",
                many.len(),
                many[..shown].join("\n  ")
            )
        }
    }
}

/// Warns where a target other than the predicted answer is asked of methods whose maps do not
/// depend on it: raw attention, rollout and DSMI read the forward pass alone, so their maps are
/// the same whatever answer is explained (`spec`, as --target gave it).
pub(super) fn warn_of_methods_blind_to(spec: &str, target: &AnswerTarget, methods: &[Method]) {
    if *target == AnswerTarget::Predicted {
        return;
    }
    let blind: Vec<&str> = methods
        .iter()
        .filter(|m| !m.needs_gradients() && !m.needs_relevance())
        .map(|m| m.name())
        .collect();
    if let Some((last, rest)) = blind.split_last() {
        let named = match rest {
            [] => last.to_string(),
            rest => format!("{} and {last}", rest.join(", ")),
        };
        let (reads, its) = match rest.is_empty() {
            true => ("reads", "its"),
            false => ("read", "their"),
        };
        eprintln!(
            "warning: --target {}: {named} {reads} the forward pass alone, so {its} maps are \
             the same whatever answer is explained",
            spec.trim(),
        );
    }
}

/// How many lines at fault an error lists.
const MAX_LINES_SHOWN: usize = 10;

/// The index of the model's answer that `answer` is: as `AnswerTarget::parse` reads
/// `answer:TEXT`, else the one answer equal to it once both are cleaned as VQA accuracy
/// cleans them.
fn expected_index(answer: &str, answers: &[String]) -> anyhow::Result<usize> {
    if let Some(i) = find_answer(answer, answers) {
        return Ok(i);
    }
    let cleaned = clean(answer);
    let same: Vec<usize> = (0..answers.len())
        .filter(|&i| clean(&answers[i]) == cleaned)
        .collect();
    match same.as_slice() {
        [i] => Ok(*i),
        [] => bail!(
            "the model has no answer {answer:?} ({} answers{})",
            answers.len(),
            answer_hint(answer, answers)
        ),
        several => bail!(
            "{answer:?} is each of the model's answers {}: name one with --target answer:TEXT",
            several
                .iter()
                .map(|&i| format!("{:?}", answers[i]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
