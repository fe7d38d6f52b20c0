//! Runs the protocol over questions in chunks of `batch`: one explanation pass per chunk,
//! then every perturbed input the chunk's methods and tests need, deduplicated (step 1 and
//! many small k's coincide across methods) and run in forward batches of `batch`. A step
//! that keeps every unit is the unperturbed input, whose answer the explanation pass gave (so
//! step 0 is the model's plain accuracy; the reference feeds LXMERT's regions in top-k order
//! even there, a permutation that changes only rounding).
//!
//! With ground truth, the explanation pass is also scored against it (a `ground-truth` line
//! per sample × method, after the chunk's perturbation lines); no forward is added.
//!
//! With a chance seed, every test also runs with the sample's units in a random order (the
//! `chance` records, after the methods'), the level the methods' AUCs are to be read against.
//!
//! A chunk with any record still to do is recomputed whole and only the missing records are
//! written, so a resumed run batches exactly like an uninterrupted one and writes the same
//! numbers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use crate::eval::chance::{random_relevance, Units, CHANCE};
use crate::eval::dataset::Question;
use crate::eval::protocol::{check_steps, keep_count, kept_image, kept_text, Modality, Test};
use crate::eval::results::{
    Done, FailureRecord, GroundTruthRecord, Line, PerturbationRecord, ResultsWriter,
};
use crate::eval::EvalError;
use crate::explain::{Explanation, Method, MethodOptions};
use crate::model::VqaTarget;

/// What one perturbed forward keeps of a sample's input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keep {
    /// The unperturbed input.
    All,
    /// These token positions ([CLS] … [SEP] indices, ascending), the image whole.
    Text(Vec<usize>),
    /// These image units (regions in this order; patches, which the model keeps in raster
    /// order), the text whole.
    Image(Vec<usize>),
}

/// One sample's explanation pass.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The unperturbed prediction, an index into `Answering::answers`; `None` from a model
    /// that answers nothing (CLIP).
    pub predicted: Option<usize>,
    /// One per method, in the order asked.
    pub explanations: Vec<Explanation>,
}

/// A model as the benchmark drives it.
pub trait EvalModel {
    /// One question's prepared inputs (pixels or regions, token ids).
    type Input;

    /// Explains a batch with every method, for `target` (a VQA model's predicted answer, or
    /// the sum of its logits; CLIP's pair score is `Predicted`).
    fn explain(
        &self,
        inputs: &[&Self::Input],
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<Vec<Explained>, EvalError>;

    /// What the perturbation tests need of the model; `None` for one with no answer to
    /// perturb (CLIP), which is only scored against ground truth.
    fn answering(&self) -> Option<&dyn Answering<Self::Input>>;
}

/// A VQA model's side of the perturbation tests.
pub trait Answering<I> {
    /// The answer of each logit.
    fn answers(&self) -> &[String];

    /// The predicted answer of each perturbed input.
    fn predict(&self, items: &[(&I, &Keep)]) -> Result<Vec<usize>, EvalError>;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub methods: Vec<Method>,
    pub tests: Vec<Test>,
    pub steps: Vec<f64>,
    /// Samples per explanation pass and inputs per perturbed forward.
    pub batch: usize,
    /// Stop at the first failing sample instead of recording it and going on.
    pub strict: bool,
    pub opts: MethodOptions,
    /// Also run the tests with each sample's units in a random order drawn from this seed
    /// (`chance::random_relevance`), recorded as the method `chance`.
    pub chance: Option<u64>,
    /// What the explanations explain. The accuracy is the predicted answer's either way.
    pub target: EvalTarget,
}

/// What a benchmark's explanations explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalTarget {
    /// The predicted answer (spec §H; CLIP's pair score).
    Predicted,
    /// The sum of the logits, for every method.
    SumLogits,
    /// The seed's targets: the sum of the logits for DSMI+Grad and DSMI+Grad+Attn (bug B1),
    /// the predicted answer for the other methods, so that one run compares with the seed's
    /// table.
    Seed,
}

impl EvalTarget {
    /// What `method` explains.
    pub fn of(self, method: Method) -> VqaTarget {
        let seed_sum = matches!(method, Method::DsmiGrad | Method::DsmiGradAttn);
        match self {
            EvalTarget::SumLogits => VqaTarget::SumLogits,
            EvalTarget::Seed if seed_sum => VqaTarget::SumLogits,
            EvalTarget::Predicted | EvalTarget::Seed => VqaTarget::Predicted,
        }
    }

    /// Its name in a results file's run header (`None`: the default, predicted).
    pub fn header_name(self) -> Option<&'static str> {
        match self {
            EvalTarget::Predicted => None,
            EvalTarget::SumLogits => Some("sum-logits"),
            EvalTarget::Seed => Some("seed"),
        }
    }
}

impl Plan {
    /// What the tests rank units by, by index: the methods in order, then chance.
    fn rankings(&self) -> Vec<&'static str> {
        let chance = self.chance.map(|_| CHANCE);
        self.methods
            .iter()
            .map(|m| m.name())
            .chain(chance)
            .collect()
    }
}

/// What a chunk produced, for progress displays.
pub struct ChunkDone<'a> {
    /// Questions of the chunk (done before or now).
    pub questions: usize,
    /// Those of them an earlier run had done (this run wrote nothing new for them).
    pub earlier: usize,
    pub written: &'a [PerturbationRecord],
    pub ground_truth: &'a [GroundTruthRecord],
    pub failures: &'a [FailureRecord],
}

/// Scores a sample's explanation against ground truth.
pub type Scorer<'a> = dyn Fn(&Question, &Explanation) -> Result<GroundTruthRecord, EvalError> + 'a;

/// Whether `model` can run `plan`: steps as `check_steps` wants them, a batch of at least
/// one, and perturbation tests only on a model that answers.
pub fn check_plan<M: EvalModel>(model: &M, plan: &Plan) -> Result<(), EvalError> {
    check_steps(&plan.steps).map_err(EvalError::Plan)?;
    if plan.batch == 0 {
        return Err(EvalError::Plan("the batch size must be at least 1".into()));
    }
    if !plan.tests.is_empty() && model.answering().is_none() {
        return Err(EvalError::Plan(
            "the perturbation tests need a model that answers (a VQA model)".into(),
        ));
    }
    if plan.target != EvalTarget::Predicted && model.answering().is_none() {
        return Err(EvalError::Plan(
            "a target other than the predicted answer needs a VQA model".into(),
        ));
    }
    if plan.chance.is_some() && plan.methods.is_empty() {
        // The units to order come with the explanation pass, which runs the methods.
        return Err(EvalError::Plan(
            "the chance rows run beside at least one method".into(),
        ));
    }
    Ok(())
}

/// Runs `plan` over `questions`, skipping records in `done`, appending to `writer`; with
/// `truth`, also scores every explanation against ground truth. After each chunk,
/// `progress` says whether to go on; `Break` when it stopped the run.
#[allow(clippy::too_many_arguments)]
pub fn run<M: EvalModel>(
    model: &M,
    questions: &[&Question],
    prepare: impl Fn(&Question) -> Result<M::Input, EvalError>,
    plan: &Plan,
    truth: Option<&Scorer<'_>>,
    done: &Done,
    writer: &mut ResultsWriter,
    mut progress: impl FnMut(ChunkDone<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, EvalError> {
    check_plan(model, plan)?;
    for chunk in questions.chunks(plan.batch) {
        let earlier = chunk
            .iter()
            .filter(|q| sample_done(q, plan, truth.is_some(), done))
            .count();
        if earlier == chunk.len() {
            let done = ChunkDone {
                questions: chunk.len(),
                earlier,
                written: &[],
                ground_truth: &[],
                failures: &[],
            };
            if progress(done).is_break() {
                return Ok(ControlFlow::Break(()));
            }
            continue;
        }
        let outcome = run_chunk(model, chunk, &prepare, plan, truth)?;
        let mut written = Vec::new();
        for record in outcome.records {
            let q = chunk
                .iter()
                .find(|q| q.id == record.sample)
                .expect("own sample");
            if missing(done, q, &record.method, record.test()) {
                writer.append(&Line::Perturbation(record.clone()))?;
                written.push(record);
            }
        }
        let mut scored = Vec::new();
        for record in outcome.ground_truth {
            let method: Method = record.method.parse()?;
            let q = chunk
                .iter()
                .find(|q| q.id == record.sample)
                .expect("own sample");
            if missing_truth(done, truth.is_some(), q, method) {
                writer.append(&Line::GroundTruth(record.clone()))?;
                scored.push(record);
            }
        }
        for failure in &outcome.failures {
            writer.append(&Line::Failure(failure.clone()))?;
        }
        let done = ChunkDone {
            questions: chunk.len(),
            earlier,
            written: &written,
            ground_truth: &scored,
            failures: &outcome.failures,
        };
        if progress(done).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Whether `done` lacks this perturbation record (of a method, or chance).
fn missing(done: &Done, q: &Question, ranking: &str, t: Test) -> bool {
    !done
        .perturbations
        .contains(&(q.id.clone(), ranking.to_owned(), t))
}

/// Whether `done` lacks this ground-truth record, in a run scored against ground truth.
fn missing_truth(done: &Done, truth: bool, q: &Question, m: Method) -> bool {
    truth
        && !done
            .ground_truth
            .contains(&(q.id.clone(), m.name().to_owned()))
}

/// Whether `done` holds every record `plan` asks of `q` (with `truth`, its ground-truth
/// records too): a sample an earlier run finished.
pub fn sample_done(q: &Question, plan: &Plan, truth: bool, done: &Done) -> bool {
    plan.methods
        .iter()
        .all(|&m| !missing_truth(done, truth, q, m))
        && plan
            .rankings()
            .into_iter()
            .all(|ranking| plan.tests.iter().all(|&t| !missing(done, q, ranking, t)))
}

struct ChunkOutcome {
    records: Vec<PerturbationRecord>,
    /// In sample, then method order.
    ground_truth: Vec<GroundTruthRecord>,
    failures: Vec<FailureRecord>,
}

/// Per-sample failures of a chunk: recorded and skipped, or (strict) the run's error.
struct Failures<'q> {
    strict: bool,
    by_sample: BTreeMap<usize, (&'q Question, String)>,
}

impl<'q> Failures<'q> {
    /// Records sample `i`'s failure; an error that stops the run instead (`--strict`, or a
    /// lost device, which is no sample's).
    fn add(&mut self, i: usize, q: &'q Question, e: EvalError) -> Result<(), EvalError> {
        if e.loses_the_device() {
            return Err(e);
        }
        if self.strict {
            return Err(EvalError::Sample {
                id: q.id.clone(),
                source: Box::new(e),
            });
        }
        self.by_sample.entry(i).or_insert((q, e.to_string()));
        Ok(())
    }

    fn has(&self, i: usize) -> bool {
        self.by_sample.contains_key(&i)
    }
}

fn run_chunk<M: EvalModel>(
    model: &M,
    chunk: &[&Question],
    prepare: &impl Fn(&Question) -> Result<M::Input, EvalError>,
    plan: &Plan,
    truth: Option<&Scorer<'_>>,
) -> Result<ChunkOutcome, EvalError> {
    let mut failures = Failures {
        strict: plan.strict,
        by_sample: BTreeMap::new(),
    };
    let mut inputs: Vec<Option<M::Input>> = Vec::with_capacity(chunk.len());
    for (i, q) in chunk.iter().enumerate() {
        match prepare(q) {
            Ok(input) => inputs.push(Some(input)),
            Err(e) => {
                failures.add(i, q, e)?;
                inputs.push(None);
            }
        }
    }
    let explained = explain_isolating(model, chunk, &inputs, plan, &mut failures)?;

    // Every sample × method × test: the keep of each step.
    let mut keeps = Keeps::new();
    let mut ground_truth = Vec::new();
    for (&i, e) in &explained {
        for (m, explanation) in e.explanations.iter().enumerate() {
            if let Err(err) = check_relevance(explanation) {
                failures.add(i, chunk[i], err)?;
                continue;
            }
            if let Some(score) = truth {
                match score(chunk[i], explanation) {
                    Ok(record) => ground_truth.push(record),
                    Err(err) => failures.add(i, chunk[i], err)?,
                }
            }
            let relevance = (
                &explanation.image_relevance[..],
                &explanation.text_relevance[..],
            );
            insert_keeps(&mut keeps, (i, m), relevance, plan);
        }
        if let (Some(seed), Some(e)) = (plan.chance, e.explanations.first()) {
            let id = &chunk[i].id;
            let image = random_relevance(seed, id, Units::Image, e.image_relevance.len());
            let text = random_relevance(seed, id, Units::Text, e.text_relevance.len());
            insert_keeps(&mut keeps, (i, plan.methods.len()), (&image, &text), plan);
        }
    }

    // check_plan saw to it that a plan with tests has a model that answers.
    let mut records = match model.answering() {
        Some(answering) if !keeps.is_empty() => {
            let prepared = (chunk, &inputs[..], &explained);
            perturbation_records(answering, prepared, &keeps, plan, &mut failures)?
        }
        _ => Vec::new(),
    };
    // Records in sample order, then the plan's method (chance last) and test order.
    let rankings = plan.rankings();
    let method_rank = |m: &str| rankings.iter().position(|x| *x == m);
    let test_rank = |t: Test| plan.tests.iter().position(|&x| x == t);
    let sample_rank = |s: &str| chunk.iter().position(|q| q.id == s);
    records.sort_by_key(|r| {
        (
            sample_rank(&r.sample),
            method_rank(&r.method),
            test_rank(r.test()),
        )
    });
    let ground_truth = ground_truth
        .into_iter()
        .filter(|r| !failures.has(sample_rank(&r.sample).expect("own sample")))
        .collect();
    let failures = failures
        .by_sample
        .into_values()
        .map(|(q, error)| FailureRecord {
            sample: q.id.clone(),
            error,
        })
        .collect();
    Ok(ChunkOutcome {
        records,
        ground_truth,
        failures,
    })
}

/// What a chunk's samples keep at each step of each test: (sample, ranking index, test) →
/// (units kept, input) per step; a ranking is a method or chance (`Plan::rankings`).
type Keeps = BTreeMap<(usize, usize, Test), Vec<(usize, Keep)>>;

/// Every test's keeps of sample `i` ranked by `ranking`'s image and text relevance.
fn insert_keeps(
    keeps: &mut Keeps,
    (i, ranking): (usize, usize),
    relevance: (&[f32], &[f32]),
    plan: &Plan,
) {
    for &test in &plan.tests {
        let steps = plan
            .steps
            .iter()
            .map(|&s| step_keep(relevance, test, s))
            .collect();
        keeps.insert((i, ranking, test), steps);
    }
}

/// A chunk's questions, prepared inputs (`None` where preparing failed) and explanation
/// passes (by position in the chunk).
type Prepared<'c, 'q, I> = (
    &'c [&'q Question],
    &'c [Option<I>],
    &'c BTreeMap<usize, Explained>,
);

/// The perturbation records of a chunk: every distinct perturbed input its `keeps` (sample,
/// ranking index, test → each step's keep) ask for, run in forward batches of `plan.batch`.
fn perturbation_records<'q, I>(
    answering: &dyn Answering<I>,
    (chunk, inputs, explained): Prepared<'_, 'q, I>,
    keeps: &Keeps,
    plan: &Plan,
    failures: &mut Failures<'q>,
) -> Result<Vec<PerturbationRecord>, EvalError> {
    // Distinct perturbed inputs, ordered by kind and size so that batches pad little.
    let distinct: BTreeSet<(usize, Keep)> = keeps
        .iter()
        .filter(|((i, _, _), _)| !failures.has(*i))
        .flat_map(|((i, _, _), steps)| steps.iter().map(move |(_, k)| (*i, k.clone())))
        .filter(|(_, k)| *k != Keep::All)
        .collect();
    let mut distinct: Vec<(usize, Keep)> = distinct.into_iter().collect();
    distinct.sort_by_key(|(i, k)| match k {
        Keep::Text(t) => (0, t.len(), *i),
        Keep::Image(u) => (1, u.len(), *i),
        Keep::All => (2, 0, *i),
    });
    let mut answers: HashMap<(usize, Keep), usize> = HashMap::with_capacity(distinct.len());
    for batch in distinct.chunks(plan.batch) {
        let items: Vec<(&I, &Keep)> = batch
            .iter()
            .map(|(i, k)| {
                (
                    inputs[*i].as_ref().expect("explained samples have inputs"),
                    k,
                )
            })
            .collect();
        match answering.predict(&items) {
            Ok(predicted) => {
                answers.extend(batch.iter().cloned().zip(predicted));
            }
            // A batch's error is one sample's; alone, it is that sample's. Otherwise the batch
            // is run one by one to find it (`--strict` too, so that it names the right one),
            // unless the device is lost (`add` then stops the run).
            Err(e) if batch.len() == 1 || e.loses_the_device() => {
                failures.add(batch[0].0, chunk[batch[0].0], e)?;
            }
            Err(_) => {
                // Find the input that fails by running the batch one by one.
                for (item, key) in items.iter().zip(batch) {
                    match answering.predict(std::slice::from_ref(item)) {
                        Ok(p) => {
                            answers.insert(key.clone(), p[0]);
                        }
                        Err(e) => failures.add(key.0, chunk[key.0], e)?,
                    }
                }
            }
        }
    }

    let labels = answering.answers();
    let rankings = plan.rankings();
    let mut records = Vec::new();
    for ((i, m, test), steps) in keeps {
        if failures.has(*i) {
            continue;
        }
        let q = chunk[*i];
        let Some(predicted) = explained[i].predicted else {
            let e = EvalError::Unsupported("the model gave no answer to explain".into());
            failures.add(*i, q, e)?;
            continue;
        };
        let mut record = PerturbationRecord {
            sample: q.id.clone(),
            method: rankings[*m].to_owned(),
            modality: test.modality,
            order: test.order,
            kept: Vec::with_capacity(steps.len()),
            answers: Vec::with_capacity(steps.len()),
            accuracy: Vec::with_capacity(steps.len()),
        };
        for (kept, keep) in steps {
            let answer = match keep {
                Keep::All => predicted,
                k => answers[&(*i, k.clone())],
            };
            let text = &labels[answer];
            record.kept.push(*kept);
            record.accuracy.push(q.truth.accuracy(text));
            record.answers.push(text.clone());
        }
        records.push(record);
    }
    Ok(records)
}

/// The explanation pass of a chunk; when the batch fails, each sample alone, so that one bad
/// sample does not sink the others.
fn explain_isolating<'q, M: EvalModel>(
    model: &M,
    chunk: &[&'q Question],
    inputs: &[Option<M::Input>],
    plan: &Plan,
    failures: &mut Failures<'q>,
) -> Result<BTreeMap<usize, Explained>, EvalError> {
    let ready: Vec<usize> = (0..chunk.len()).filter(|&i| inputs[i].is_some()).collect();
    let refs: Vec<&M::Input> = ready.iter().map(|&i| inputs[i].as_ref().unwrap()).collect();
    if refs.is_empty() {
        return Ok(BTreeMap::new());
    }
    match explain_plan(model, &refs, plan) {
        Ok(explained) => return Ok(ready.into_iter().zip(explained).collect()),
        // A lost device fails every sample alike: `add` stops the run.
        Err(e) if ready.len() == 1 || e.loses_the_device() => {
            failures.add(ready[0], chunk[ready[0]], e)?;
            return Ok(BTreeMap::new());
        }
        Err(_) => {}
    }
    let mut out = BTreeMap::new();
    for (&i, input) in ready.iter().zip(refs) {
        match explain_plan(model, &[input], plan) {
            Ok(mut e) => {
                out.insert(i, e.remove(0));
            }
            Err(e) => failures.add(i, chunk[i], e)?,
        }
    }
    Ok(out)
}

/// The plan's methods over `inputs`: one explanation pass per target the methods explain
/// (two for `EvalTarget::Seed` when both kinds are asked), merged in the plan's order.
fn explain_plan<M: EvalModel>(
    model: &M,
    inputs: &[&M::Input],
    plan: &Plan,
) -> Result<Vec<Explained>, EvalError> {
    let mut groups: Vec<(VqaTarget, Vec<Method>)> = Vec::new();
    for &m in &plan.methods {
        let target = plan.target.of(m);
        match groups.iter_mut().find(|(t, _)| *t == target) {
            Some((_, methods)) => methods.push(m),
            None => groups.push((target, vec![m])),
        }
    }
    let Some(((target, methods), rest)) = groups.split_first() else {
        // No method: the pass gives the predicted answers alone.
        return model.explain(inputs, &[], &plan.opts, &VqaTarget::Predicted);
    };
    let mut explained = model.explain(inputs, methods, &plan.opts, target)?;
    for (target, methods) in rest {
        let more = model.explain(inputs, methods, &plan.opts, target)?;
        for (sample, other) in explained.iter_mut().zip(more) {
            sample.explanations.extend(other.explanations);
        }
    }
    let position = |m: Method| plan.methods.iter().position(|&p| p == m);
    for sample in &mut explained {
        sample.explanations.sort_by_key(|e| position(e.method));
    }
    Ok(explained)
}

/// Relevance must be finite to be ranked (a NaN would sort arbitrarily).
fn check_relevance(e: &Explanation) -> Result<(), EvalError> {
    let bad = e
        .image_relevance
        .iter()
        .chain(&e.text_relevance)
        .any(|v| !v.is_finite());
    if bad {
        Err(EvalError::Relevance(e.method))
    } else {
        Ok(())
    }
}

/// Units kept at `step` (for the record) and the input to run, ranking by `(image, text)`
/// relevance.
fn step_keep((image, text): (&[f32], &[f32]), test: Test, step: f64) -> (usize, Keep) {
    match test.modality {
        Modality::Image => {
            let n = image.len();
            if keep_count(step, n) == n {
                return (n, Keep::All);
            }
            let kept = kept_image(image, test.order, step);
            (kept.len(), Keep::Image(kept))
        }
        Modality::Text => {
            let t = text.len();
            let words = t.saturating_sub(2);
            if keep_count(step, words) == words {
                return (words, Keep::All);
            }
            let kept = kept_text(text, test.order, step);
            (kept.len() - 2, Keep::Text(kept))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The runner's part of spec §E, with a model that answers which input it was given: at
    //! every step of every test, the perturbed input is the one the protocol defines from the
    //! explanation (computed here by hand from the spec, not with `protocol`'s functions),
    //! the record counts the units kept, and the accuracy is the ground truth's for the
    //! answer of that input.
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::eval::answers::GroundTruth;
    use crate::eval::protocol::Order;
    use crate::model::ModelError;
    use crate::session::SessionError;

    /// Answers are the `Keep`s written out; predicting returns the answer naming the input.
    struct Echo {
        answers: Vec<String>,
        seen: RefCell<Vec<Keep>>,
        explanation: Explanation,
        /// The targets it was asked to explain.
        targets: RefCell<Vec<VqaTarget>>,
    }

    fn name(k: &Keep) -> String {
        format!("{k:?}")
    }

    impl Echo {
        fn index(&self, k: &Keep) -> usize {
            let n = name(k);
            self.answers
                .iter()
                .position(|a| *a == n)
                .unwrap_or_else(|| {
                    panic!("the runner ran an input the protocol never asks for: {n}")
                })
        }
    }

    impl EvalModel for Echo {
        type Input = ();

        fn explain(
            &self,
            inputs: &[&()],
            _: &[Method],
            _: &MethodOptions,
            target: &VqaTarget,
        ) -> Result<Vec<Explained>, EvalError> {
            self.targets.borrow_mut().push(target.clone());
            Ok(inputs
                .iter()
                .map(|_| Explained {
                    predicted: Some(self.index(&Keep::All)),
                    explanations: vec![self.explanation.clone()],
                })
                .collect())
        }

        fn answering(&self) -> Option<&dyn Answering<()>> {
            Some(self)
        }
    }

    impl Answering<()> for Echo {
        fn answers(&self) -> &[String] {
            &self.answers
        }

        fn predict(&self, items: &[(&(), &Keep)]) -> Result<Vec<usize>, EvalError> {
            let mut seen = self.seen.borrow_mut();
            Ok(items
                .iter()
                .map(|(_, k)| {
                    seen.push((*k).clone());
                    self.index(k)
                })
                .collect())
        }
    }

    /// Explains inputs 0, 1, 2, …; fails any batch holding `bad`, as a lost device with
    /// `lost`.
    struct FailsOn {
        bad: usize,
        lost: bool,
        answers: Vec<String>,
    }

    impl EvalModel for FailsOn {
        type Input = usize;

        fn explain(
            &self,
            inputs: &[&usize],
            _: &[Method],
            _: &MethodOptions,
            _: &VqaTarget,
        ) -> Result<Vec<Explained>, EvalError> {
            if inputs.contains(&&self.bad) && self.lost {
                let lost = crate::backend::BackendError::DeviceLost {
                    op: "softmax_fwd",
                    message: "kernel launch failed".into(),
                };
                return Err(SessionError::from(ModelError::from(lost)).into());
            }
            if inputs.contains(&&self.bad) {
                return Err(EvalError::Unsupported(format!("input {}", self.bad)));
            }
            Ok(inputs
                .iter()
                .map(|_| Explained {
                    predicted: Some(0),
                    explanations: Vec::new(),
                })
                .collect())
        }

        fn answering(&self) -> Option<&dyn Answering<usize>> {
            Some(self)
        }
    }

    impl Answering<usize> for FailsOn {
        fn answers(&self) -> &[String] {
            &self.answers
        }

        fn predict(&self, items: &[(&usize, &Keep)]) -> Result<Vec<usize>, EvalError> {
            Ok(vec![0; items.len()])
        }
    }

    /// Three questions q0, q1, q2, explained by `FailsOn` (input i for question qi) in one
    /// batch of raw attention, `strict` or not: `run_chunk` over them.
    fn run_three(model: &FailsOn, strict: bool) -> Result<ChunkOutcome, EvalError> {
        let questions: Vec<Question> = (0..3)
            .map(|i| Question {
                id: format!("q{i}"),
                image_id: format!("img{i}"),
                text: "what?".into(),
                truth: GroundTruth::Scores(BTreeMap::new()),
            })
            .collect();
        let chunk: Vec<&Question> = questions.iter().collect();
        let index = |q: &Question| Ok(q.id[1..].parse::<usize>().unwrap());
        let plan = Plan {
            methods: vec![Method::RawAttn],
            tests: Vec::new(),
            steps: vec![0.0, 1.0],
            batch: 3,
            strict,
            opts: MethodOptions::default(),
            chance: None,
            target: EvalTarget::Predicted,
        };
        run_chunk(model, &chunk, &index, &plan, None)
    }

    /// A batch that fails for one sample is blamed on that sample, `--strict` or not (strict
    /// named the batch's first).
    #[test]
    fn a_failing_batch_is_blamed_on_its_failing_sample() {
        let model = FailsOn {
            bad: 1,
            lost: false,
            answers: vec!["yes".into()],
        };
        for strict in [false, true] {
            match run_three(&model, strict) {
                Ok(out) => {
                    assert!(!strict);
                    let failed: Vec<&str> =
                        out.failures.iter().map(|f| f.sample.as_str()).collect();
                    assert_eq!(failed, ["q1"]);
                }
                Err(e) => {
                    assert!(strict);
                    assert!(e.to_string().starts_with("sample q1: input 1"), "{e}");
                }
            }
        }
    }

    /// A lost device is no sample's failure: the chunk stops with it, `--strict` or not.
    #[test]
    fn a_lost_device_stops_the_chunk() {
        let model = FailsOn {
            bad: 1,
            lost: true,
            answers: vec!["yes".into()],
        };
        for strict in [false, true] {
            let e = run_three(&model, strict).err().expect("the chunk stops");
            assert!(e.loses_the_device(), "{e}");
            assert!(
                e.to_string()
                    .starts_with("softmax_fwd: kernel launch failed"),
                "{e}"
            );
        }
    }

    #[test]
    fn every_step_runs_the_input_the_protocol_defines() {
        use Keep::{All, Image, Text};
        // Four regions; [CLS] w1 w2 w3 [SEP]. Relevance is raw, as explanations give it.
        let image = vec![0.3, 0.9, 0.1, 0.5];
        let text = vec![5.0, 0.2, 0.8, 0.5, -1.0];
        let steps = vec![0.0, 0.5, 0.75, 1.0];
        // §E by hand. Image: keep int((1 − s)·4) = 4, 2, 1, 0 regions, in top-k order of the
        // relevance (least-relevant-first: the highest kept; most-relevant-first: the lowest).
        // Text: keep int((1 − s)·3) = 3, 1, 0, 0 words, ascending, with [CLS] and [SEP].
        let expected: [(Modality, Order, Vec<Keep>); 4] = [
            (
                Modality::Image,
                Order::MostRelevantFirst,
                vec![All, Image(vec![2, 0]), Image(vec![2]), Image(vec![])],
            ),
            (
                Modality::Image,
                Order::LeastRelevantFirst,
                vec![All, Image(vec![1, 3]), Image(vec![1]), Image(vec![])],
            ),
            (
                Modality::Text,
                Order::MostRelevantFirst,
                vec![All, Text(vec![0, 1, 4]), Text(vec![0, 4]), Text(vec![0, 4])],
            ),
            (
                Modality::Text,
                Order::LeastRelevantFirst,
                vec![All, Text(vec![0, 2, 4]), Text(vec![0, 4]), Text(vec![0, 4])],
            ),
        ];
        let kept_counts = |m: Modality| match m {
            Modality::Image => vec![4, 2, 1, 0],
            Modality::Text => vec![3, 1, 0, 0],
        };
        let mut answers: Vec<String> = expected
            .iter()
            .flat_map(|(_, _, keeps)| keeps.iter().map(name))
            .collect();
        answers.sort();
        answers.dedup();
        let model = Echo {
            answers: answers.clone(),
            seen: RefCell::new(Vec::new()),
            targets: RefCell::new(Vec::new()),
            explanation: Explanation {
                method: Method::RawAttn,
                score: 1.0,
                image_relevance: image,
                image_grid: (1, 4),
                text_relevance: text,
                text_scored: vec![false, true, true, true, false],
                degenerate_graphs: Vec::new(),
            },
        };
        // Each input's answer earns a score of its own, so the accuracies name the inputs too.
        let scores: BTreeMap<String, f64> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), (i + 1) as f64 / 100.0))
            .collect();
        let question = Question {
            id: "q1".into(),
            image_id: "img".into(),
            text: "what?".into(),
            truth: GroundTruth::Scores(scores.clone()),
        };
        let plan = Plan {
            methods: vec![Method::RawAttn],
            tests: expected
                .iter()
                .map(|(modality, order, _)| Test {
                    modality: *modality,
                    order: *order,
                })
                .collect(),
            steps,
            batch: 8,
            strict: true,
            opts: MethodOptions::default(),
            chance: None,
            target: EvalTarget::Predicted,
        };
        let out = run_chunk(&model, &[&question], &|_: &Question| Ok(()), &plan, None).unwrap();
        assert!(out.failures.is_empty());
        assert_eq!(out.records.len(), 4);
        for ((modality, order, keeps), r) in expected.iter().zip(&out.records) {
            let what = format!("{modality} {order}");
            assert_eq!((r.modality, r.order), (*modality, *order), "{what}");
            assert_eq!(r.method, "raw-attn");
            let names: Vec<String> = keeps.iter().map(name).collect();
            assert_eq!(r.answers, names, "{what}: inputs run at each step");
            assert_eq!(r.kept, kept_counts(*modality), "{what}: units kept");
            let accuracy: Vec<f64> = names.iter().map(|n| scores[n]).collect();
            assert_eq!(r.accuracy, accuracy, "{what}");
        }
        // Step 0 is the explanation pass's answer, not a forward; each other input runs once.
        let mut seen = model.seen.into_inner();
        assert!(!seen.contains(&All));
        let runs = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), runs, "an input ran twice");
        assert_eq!(runs, answers.len() - 1);
    }

    /// With a chance seed, each test also runs on each sample's units in the random order
    /// `random_relevance` draws for that sample (the protocol applied by hand to the order),
    /// recorded as `chance` after the sample's methods' records.
    #[test]
    fn chance_records_remove_units_in_the_drawn_order() {
        use Keep::{All, Image, Text};
        let seed = 99;
        let with_ends = |words: &[usize]| {
            let mut kept = [&[0, 6], words].concat();
            kept.sort_unstable();
            Text(kept)
        };
        // Six regions and [CLS] w1…w5 [SEP]; steps 0, .5, 1 keep 6, 3, 0 regions and 5, 2, 0
        // words. Per removal order: the image's and the text's inputs.
        let chance_keeps = |id: &str| -> Vec<(Order, Vec<Keep>, Vec<Keep>)> {
            let image_rank = random_relevance(seed, id, Units::Image, 6);
            let text_rank = random_relevance(seed, id, Units::Text, 7);
            // Units by rank, highest first; text: the words, positions 1 to 5.
            let by_rank = |rank: &[f32], mut units: Vec<usize>| {
                units.sort_by(|&a, &b| rank[b].total_cmp(&rank[a]));
                units
            };
            let image_desc = by_rank(&image_rank, (0..6).collect());
            let word_desc = by_rank(&text_rank, (1..6).collect());
            let reversed = |v: &[usize]| v.iter().rev().copied().collect::<Vec<_>>();
            [
                (
                    Order::LeastRelevantFirst,
                    image_desc.clone(),
                    word_desc.clone(),
                ),
                (
                    Order::MostRelevantFirst,
                    reversed(&image_desc),
                    reversed(&word_desc),
                ),
            ]
            .into_iter()
            .map(|(order, image, words)| {
                let image_keeps = vec![All, Image(image[..3].to_vec()), Image(vec![])];
                let text_keeps = vec![All, with_ends(&words[..2]), with_ends(&[])];
                (order, image_keeps, text_keeps)
            })
            .collect()
        };
        let ids = ["q7", "q8"];
        let explanation = Explanation {
            method: Method::RawAttn,
            score: 1.0,
            image_relevance: vec![0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
            image_grid: (2, 3),
            text_relevance: vec![0.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
            text_scored: vec![false, true, true, true, true, true, false],
            degenerate_graphs: Vec::new(),
        };
        // The method's inputs: the first units by index are its most relevant.
        let method_keeps = [
            Image(vec![5, 4, 3]),
            Image(vec![0, 1, 2]),
            Text(vec![0, 4, 5, 6]),
            Text(vec![0, 1, 2, 6]),
        ];
        let drawn: Vec<Keep> = ids
            .iter()
            .flat_map(|id| chance_keeps(id))
            .flat_map(|(_, image, text)| image.into_iter().chain(text))
            .collect();
        let mut answers: Vec<String> = drawn.iter().chain(&method_keeps).map(name).collect();
        answers.sort();
        answers.dedup();
        let model = Echo {
            answers,
            seen: RefCell::new(Vec::new()),
            explanation,
            targets: RefCell::new(Vec::new()),
        };
        let questions: Vec<Question> = ids
            .iter()
            .map(|id| Question {
                id: (*id).into(),
                image_id: "img".into(),
                text: "what?".into(),
                truth: GroundTruth::Scores(BTreeMap::new()),
            })
            .collect();
        let plan = Plan {
            methods: vec![Method::RawAttn],
            tests: crate::eval::report::TESTS.to_vec(),
            steps: vec![0.0, 0.5, 1.0],
            batch: 4,
            strict: true,
            opts: MethodOptions::default(),
            chance: Some(seed),
            target: EvalTarget::SumLogits,
        };
        let chunk: Vec<&Question> = questions.iter().collect();
        let out = run_chunk(&model, &chunk, &|_: &Question| Ok(()), &plan, None).unwrap();
        let methods: Vec<(&str, &str)> = out
            .records
            .iter()
            .map(|r| (r.sample.as_str(), r.method.as_str()))
            .collect();
        // The plan's target reaches the explanation pass.
        assert_eq!(*model.targets.borrow(), [VqaTarget::SumLogits]);
        let per_sample = |id| [[(id, "raw-attn"); 4], [(id, "chance"); 4]].concat();
        assert_eq!(methods, [per_sample("q7"), per_sample("q8")].concat());
        for r in out.records.iter().filter(|r| r.method == "chance") {
            let keeps = chance_keeps(&r.sample);
            let (_, image, text) = keeps.iter().find(|(o, _, _)| *o == r.order).unwrap();
            let keeps = match r.modality {
                Modality::Image => image,
                Modality::Text => text,
            };
            let names: Vec<String> = keeps.iter().map(name).collect();
            assert_eq!(
                r.answers, names,
                "{} chance {} {}",
                r.sample, r.modality, r.order
            );
        }
    }

    /// Explains with no answer (as CLIP does); has answers to perturb only when asked to.
    struct Mute {
        answers: Option<Vec<String>>,
    }

    impl EvalModel for Mute {
        type Input = ();

        fn explain(
            &self,
            inputs: &[&()],
            _: &[Method],
            _: &MethodOptions,
            _: &VqaTarget,
        ) -> Result<Vec<Explained>, EvalError> {
            let explanation = Explanation {
                method: Method::RawAttn,
                score: 1.0,
                image_relevance: vec![0.2, 0.7],
                image_grid: (1, 2),
                text_relevance: vec![0.0, 1.0, 0.0],
                text_scored: vec![false, true, false],
                degenerate_graphs: Vec::new(),
            };
            Ok(inputs
                .iter()
                .map(|_| Explained {
                    predicted: None,
                    explanations: vec![explanation.clone()],
                })
                .collect())
        }

        fn answering(&self) -> Option<&dyn Answering<()>> {
            self.answers.as_ref().map(|_| self as &dyn Answering<()>)
        }
    }

    impl Answering<()> for Mute {
        fn answers(&self) -> &[String] {
            self.answers.as_deref().unwrap_or_default()
        }

        fn predict(&self, items: &[(&(), &Keep)]) -> Result<Vec<usize>, EvalError> {
            Ok(vec![0; items.len()])
        }
    }

    /// A plan is checked before anything runs: perturbation tests need a model that answers,
    /// batches hold one sample at least, steps are as `check_steps` wants them. A model that
    /// answers but gave no answer to explain fails its samples instead of being indexed.
    #[test]
    fn plans_a_model_cannot_run_are_refused() {
        let test = Test {
            modality: Modality::Image,
            order: Order::MostRelevantFirst,
        };
        let plan = |tests: Vec<Test>, steps: Vec<f64>, batch| Plan {
            methods: vec![Method::RawAttn],
            tests,
            steps,
            batch,
            strict: false,
            opts: MethodOptions::default(),
            chance: None,
            target: EvalTarget::Predicted,
        };
        let clip = Mute { answers: None };
        let vqa = Mute {
            answers: Some(vec!["yes".into()]),
        };
        let refusal = |model: &Mute, plan: &Plan| match check_plan(model, plan) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let good = plan(vec![test], vec![0.0, 0.5, 1.0], 2);
        assert!(refusal(&clip, &good).contains("need a model that answers"));
        assert_eq!(refusal(&vqa, &good), "");
        assert_eq!(refusal(&clip, &plan(Vec::new(), vec![0.0, 1.0], 2)), "");
        let zero_batch = refusal(&vqa, &plan(vec![test], vec![0.0, 1.0], 0));
        assert!(
            zero_batch.contains("batch size must be at least 1"),
            "{zero_batch}"
        );
        let steps = refusal(&vqa, &plan(vec![test], vec![0.5, 1.0], 2));
        assert!(steps.contains("the first step must be 0"), "{steps}");
        let alone = Plan {
            methods: Vec::new(),
            chance: Some(1),
            ..good.clone()
        };
        let alone = refusal(&vqa, &alone);
        assert!(
            alone.contains("chance rows run beside at least one method"),
            "{alone}"
        );
        let sum = Plan {
            target: EvalTarget::SumLogits,
            ..good.clone()
        };
        assert_eq!(refusal(&vqa, &sum), "");
        let clip_sum = Plan {
            tests: Vec::new(),
            ..sum
        };
        let clip_sum = refusal(&clip, &clip_sum);
        assert!(clip_sum.contains("needs a VQA model"), "{clip_sum}");

        let question = Question {
            id: "q1".into(),
            image_id: "img".into(),
            text: "what?".into(),
            truth: GroundTruth::Scores(BTreeMap::new()),
        };
        let out = run_chunk(&vqa, &[&question], &|_: &Question| Ok(()), &good, None).unwrap();
        assert!(out.records.is_empty());
        let failed: Vec<(&str, &str)> = out
            .failures
            .iter()
            .map(|f| (f.sample.as_str(), f.error.as_str()))
            .collect();
        assert_eq!(failed, [("q1", "the model gave no answer to explain")]);
    }

    /// Explains each method asked, one explanation per method, recording each call's target
    /// and methods.
    struct Recorder {
        calls: RefCell<Vec<(VqaTarget, Vec<Method>)>>,
    }

    impl EvalModel for Recorder {
        type Input = ();

        fn explain(
            &self,
            inputs: &[&()],
            methods: &[Method],
            _: &MethodOptions,
            target: &VqaTarget,
        ) -> Result<Vec<Explained>, EvalError> {
            self.calls
                .borrow_mut()
                .push((target.clone(), methods.to_vec()));
            let explanation = |&method: &Method| Explanation {
                method,
                score: 0.0,
                image_relevance: Vec::new(),
                image_grid: (1, 0),
                text_relevance: Vec::new(),
                text_scored: Vec::new(),
                degenerate_graphs: Vec::new(),
            };
            Ok(inputs
                .iter()
                .map(|_| Explained {
                    predicted: Some(0),
                    explanations: methods.iter().map(explanation).collect(),
                })
                .collect())
        }

        fn answering(&self) -> Option<&dyn Answering<()>> {
            None
        }
    }

    /// One explanation pass per target the plan's methods explain, each with its methods in
    /// the plan's order, and every sample's explanations merged back into that order: the
    /// seed's targets split off dsmi-grad and dsmi-grad-attn, the others make one pass.
    #[test]
    fn each_target_gets_one_pass_and_the_explanations_keep_the_plan_order() {
        use Method::{Chefer, DsmiGrad, DsmiGradAttn, GradCam, RawAttn};
        let methods = vec![DsmiGrad, GradCam, DsmiGradAttn, RawAttn, Chefer];
        let passes = |target: EvalTarget, methods: &[Method]| {
            let model = Recorder {
                calls: RefCell::new(Vec::new()),
            };
            let plan = Plan {
                methods: methods.to_vec(),
                tests: Vec::new(),
                steps: vec![0.0, 1.0],
                batch: 2,
                strict: true,
                opts: MethodOptions::default(),
                chance: None,
                target,
            };
            let explained = explain_plan(&model, &[&(), &()], &plan).unwrap();
            assert_eq!(explained.len(), 2);
            for sample in &explained {
                let order: Vec<Method> = sample.explanations.iter().map(|e| e.method).collect();
                assert_eq!(order, methods, "{target:?}");
                assert_eq!(sample.predicted, Some(0));
            }
            model.calls.into_inner()
        };
        assert_eq!(
            passes(EvalTarget::Seed, &methods),
            [
                (VqaTarget::SumLogits, vec![DsmiGrad, DsmiGradAttn]),
                (VqaTarget::Predicted, vec![GradCam, RawAttn, Chefer]),
            ]
        );
        assert_eq!(
            passes(EvalTarget::SumLogits, &methods),
            [(VqaTarget::SumLogits, methods.clone())]
        );
        assert_eq!(
            passes(EvalTarget::Predicted, &methods),
            [(VqaTarget::Predicted, methods.clone())]
        );
        assert_eq!(
            passes(EvalTarget::Seed, &[GradCam, Chefer]),
            [(VqaTarget::Predicted, vec![GradCam, Chefer])]
        );
        assert_eq!(
            passes(EvalTarget::Seed, &[]),
            [(VqaTarget::Predicted, vec![])]
        );
    }
}
