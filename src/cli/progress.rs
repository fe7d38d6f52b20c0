//! Progress of a long run (eval, explain) on stderr. On a terminal, indicatif's bar;
//! elsewhere (a log file, nohup, CI), where the bar draws nothing, plain lines: one at the
//! start, then one at most every 30 s (done/total, rate, ETA), and one at the end. The running
//! summary (eval's AUCs, a line per method) follows the end line and the first line after each
//! tenth of the samples: a run of hours stays a readable log, a run of seconds prints two
//! lines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{
    FormattedDuration, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

use crate::cli::counted;

/// The shortest time between two progress lines.
const LINE_EVERY: Duration = Duration::from_secs(30);

/// What is making progress, for the plain lines: "eval: 40/100 samples …, 60 evaluated".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub name: &'static str,
    /// What happens to a sample, in the past tense.
    pub done: &'static str,
}

impl Task {
    pub const EVAL: Task = Task {
        name: "eval",
        done: "evaluated",
    };
    pub const EXPLAIN: Task = Task {
        name: "explain",
        done: "explained",
    };
    /// Drawing and writing the explained samples' images and page.
    pub const WRITE: Task = Task {
        name: "write",
        done: "written",
    };
}

pub enum Progress {
    Bar(ProgressBar),
    Lines(Lines),
}

/// Samples that are through, by how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    /// Done by an earlier run: they stay out of the counts of this run, its rate and ETA.
    pub earlier: usize,
    /// Done by this run.
    pub evaluated: usize,
    /// Tried by this run, and failed.
    pub failed: usize,
}

impl Advance {
    fn total(self) -> usize {
        self.earlier + self.evaluated + self.failed
    }

    /// Samples this run spent time on.
    fn worked(self) -> usize {
        self.evaluated + self.failed
    }
}

/// Plain progress lines.
pub struct Lines {
    task: Task,
    total: usize,
    done: usize,
    /// Samples done by this run (not by an earlier one), and those it tried and failed: the
    /// rate is theirs together.
    evaluated: usize,
    failed: usize,
    started: Instant,
    last_line: Instant,
    /// Tenths of `total` done when the running AUCs were last printed (or skipped over as
    /// done earlier).
    last_tenth: usize,
    message: String,
}

impl Progress {
    /// Progress of `task` over `total` samples, `done_before` of them done by an earlier run;
    /// a run of one chunk (`total <= batch`) gets no bar, as it would never move.
    pub fn new(task: Task, total: usize, done_before: usize, batch: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines(Lines::start(task, total, done_before));
        }
        // Named by its task, so that a run's bars (explain, then write) are told apart.
        let bar = ProgressBar::new(total as u64).with_prefix(task.name);
        if total <= batch {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} samples  {rate}  eta {eta}\n{msg}",
            )
            .expect("static template is valid")
            // indicatif's own {per_sec} shows four decimals ("212.6807/s").
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate_text(state.per_sec()));
                },
            ),
        );
        Progress::Bar(bar)
    }

    /// No progress shown at all.
    pub fn hidden() -> Self {
        Progress::Bar(ProgressBar::hidden())
    }

    /// The running summary shown under the bar or in the next line.
    pub fn set_message(&mut self, message: String) {
        match self {
            Progress::Bar(bar) => bar.set_message(message),
            Progress::Lines(lines) => lines.message = message,
        }
    }

    /// More samples are through.
    pub fn advance(&mut self, by: Advance) {
        match self {
            Progress::Bar(bar) => {
                bar.inc(by.total() as u64);
                if by.worked() == 0 {
                    // Skipping what is done takes no time: keep it out of the rate.
                    bar.reset_eta();
                }
            }
            Progress::Lines(lines) => lines.advance(by),
        }
    }

    /// Prints a line on stderr without tearing the bar.
    pub fn println(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Progress::Lines(_) => eprintln!("{line}"),
        }
    }

    /// Sends the library's warnings above the bar while it shows (printed plainly, they would
    /// tear it), until `finish`.
    pub fn route_warnings(&self) {
        if let Progress::Bar(bar) = self {
            let bar = bar.clone();
            fiedler::warning::set_handler(move |m| bar.suspend(|| eprintln!("warning: {m}")));
        }
    }

    pub fn finish(self) {
        fiedler::warning::reset_handler();
        match self {
            Progress::Bar(bar) => bar.finish_and_clear(),
            Progress::Lines(lines) => lines.finish(),
        }
    }
}

impl Lines {
    fn start(task: Task, total: usize, done_before: usize) -> Self {
        let lines = Self::new(task, total, Instant::now());
        eprintln!("{}", lines.start_line(done_before));
        lines
    }

    fn new(task: Task, total: usize, now: Instant) -> Self {
        Self {
            task,
            total,
            done: 0,
            evaluated: 0,
            failed: 0,
            started: now,
            last_line: now,
            last_tenth: 0,
            message: String::new(),
        }
    }

    fn start_line(&self, done_before: usize) -> String {
        let samples = counted(self.total, "sample");
        let task = self.task.name;
        if done_before == 0 {
            format!("{task}: {samples}")
        } else {
            format!(
                "{task}: resuming, {done_before} of {samples} done earlier; {} to go",
                self.total.saturating_sub(done_before)
            )
        }
    }

    fn tenths(&self) -> usize {
        10 * self.done / self.total.max(1)
    }

    fn advance(&mut self, by: Advance) {
        if let Some(text) = self.step(by, Instant::now()) {
            eprint!("{text}");
        }
    }

    /// Counts the samples through at `now`; the lines to print, if any are due.
    fn step(&mut self, by: Advance, now: Instant) -> Option<String> {
        self.done += by.total();
        if by.worked() == 0 {
            // Skipping what is done takes no time: no line for it.
            self.last_tenth = self.tenths();
            return None;
        }
        self.evaluated += by.evaluated;
        self.failed += by.failed;
        if self.done >= self.total || now.duration_since(self.last_line) < LINE_EVERY {
            return None;
        }
        let (rate, eta) = match self.rate(now) {
            Some(r) => {
                let left = (self.total - self.done) as f64 / r;
                (
                    rate_text(r),
                    HumanDuration(Duration::from_secs_f64(left)).to_string(),
                )
            }
            None => ("no rate yet".into(), "unknown".into()),
        };
        let mut text = format!(
            "{}: {}/{} samples ({}%), {rate}, eta {eta}\n",
            self.task.name,
            self.done,
            self.total,
            100 * self.done / self.total,
        );
        if self.tenths() > self.last_tenth {
            text += &self.indented_message();
            self.last_tenth = self.tenths();
        }
        self.last_line = now;
        Some(text)
    }

    /// Samples per second done by this run, once it has done any.
    fn rate(&self, now: Instant) -> Option<f64> {
        let seconds = now.duration_since(self.started).as_secs_f64();
        let worked = self.evaluated + self.failed;
        (worked > 0 && seconds > 0.0).then(|| worked as f64 / seconds)
    }

    fn indented_message(&self) -> String {
        self.message.lines().map(|l| format!("  {l}\n")).collect()
    }

    fn finish(self) {
        eprint!("{}", self.end_lines(Instant::now()));
    }

    fn end_lines(&self, now: Instant) -> String {
        let this_run = match self.rate(now) {
            Some(rate) => format!(
                "{} {}{} in {} ({})",
                self.evaluated,
                self.task.done,
                match self.failed {
                    0 => String::new(),
                    n => format!(", {n} failed"),
                },
                FormattedDuration(now.duration_since(self.started)),
                rate_text(rate)
            ),
            None if self.done >= self.total => "nothing left to do".into(),
            // Stopped at its first sample (`eval --strict`, Ctrl-C, an error).
            None => "stopped before any was done".into(),
        };
        format!(
            "{}: {}/{} done; {this_run}\n{}",
            self.task.name,
            self.done,
            counted(self.total, "sample"),
            self.indented_message()
        )
    }
}

fn rate_text(samples_per_second: f64) -> String {
    format!("{samples_per_second:.2} samples/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn earlier(n: usize) -> Advance {
        Advance {
            earlier: n,
            ..Advance::default()
        }
    }

    fn evaluated(n: usize) -> Advance {
        Advance {
            evaluated: n,
            ..Advance::default()
        }
    }

    /// A line at most every 30 s, the running AUCs with the first line past each tenth and
    /// at the end; samples done by an earlier run print nothing and stay out of the rate.
    #[test]
    fn lines_come_every_30_s_and_aucs_every_tenth() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut lines = Lines::new(Task::EVAL, 100, t0);
        lines.message = "chefer  image+ 40.00".into();
        assert_eq!(lines.start_line(0), "eval: 100 samples");
        assert_eq!(
            lines.start_line(40),
            "eval: resuming, 40 of 100 samples done earlier; 60 to go"
        );
        assert_eq!(lines.step(earlier(40), at(0)), None);
        // 5% more in 10 s: not yet; 30 s after the last line: a line, no AUCs (still 4 tenths)
        assert_eq!(lines.step(evaluated(5), at(10)), None);
        assert_eq!(
            lines.step(evaluated(5), at(30)).as_deref(),
            Some("eval: 50/100 samples (50%), 0.33 samples/s, eta 3 minutes\n  chefer  image+ 40.00\n")
        );
        assert_eq!(lines.step(evaluated(5), at(45)), None);
        assert_eq!(
            lines.step(evaluated(1), at(60)).as_deref(),
            Some("eval: 56/100 samples (56%), 0.27 samples/s, eta 3 minutes\n")
        );
        assert_eq!(lines.step(evaluated(44), at(90)), None);
        assert_eq!(
            lines.end_lines(at(90)),
            "eval: 100/100 samples done; 60 evaluated in 00:01:30 (0.67 samples/s)\n  chefer  image+ 40.00\n"
        );
        let mut resumed = Lines::new(Task::EVAL, 1, t0);
        resumed.step(earlier(1), at(0));
        assert_eq!(
            resumed.end_lines(at(1)),
            "eval: 1/1 sample done; nothing left to do\n"
        );
        let stopped = Lines::new(Task::EVAL, 20, t0);
        assert_eq!(
            stopped.end_lines(at(1)),
            "eval: 0/20 samples done; stopped before any was done\n"
        );
    }

    /// A chunk that an earlier run had partly done counts only its new samples as this run's,
    /// and samples that failed are counted apart (and in the rate: they took time).
    #[test]
    fn only_this_runs_samples_count_as_evaluated() {
        let t0 = Instant::now();
        let mut lines = Lines::new(Task::EVAL, 10, t0);
        let chunk = Advance {
            earlier: 5,
            evaluated: 2,
            failed: 1,
        };
        assert_eq!(lines.step(chunk, t0), None);
        assert_eq!(lines.step(evaluated(2), t0), None);
        assert_eq!(
            lines.end_lines(t0 + Duration::from_secs(10)),
            "eval: 10/10 samples done; 4 evaluated, 1 failed in 00:00:10 (0.50 samples/s)\n"
        );
    }
}
