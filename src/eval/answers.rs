//! VQA accuracy of a predicted answer against a question's ground truth.
//!
//! Two forms: LXMERT's data files carry a soft score per answer and are used as given
//! (`label.get(answer, 0)`, spec §E); the official VQA v2 annotations carry ten annotator
//! answers, scored like the official evaluation (`vqaEval.py`): the answer is cleaned of
//! punctuation, number words and articles; when the annotators disagree, their answers are
//! cleaned of punctuation too; the accuracy is min(1, matches/3) among the other nine answers,
//! averaged over the ten leave-one-out subsets.

use std::collections::BTreeMap;

/// A question's ground truth.
#[derive(Debug, Clone, PartialEq)]
pub enum GroundTruth {
    /// LXMERT format: answer → soft score in [0, 1].
    Scores(BTreeMap<String, f64>),
    /// Official VQA v2: the annotators' answers (ten per question).
    Annotators(Vec<String>),
}

impl GroundTruth {
    /// The accuracy of `answer` in [0, 1].
    pub fn accuracy(&self, answer: &str) -> f64 {
        match self {
            GroundTruth::Scores(scores) => scores.get(answer).copied().unwrap_or(0.0),
            GroundTruth::Annotators(answers) => official_accuracy(answer, answers),
        }
    }

    /// The answers that earn some credit, for checking the model's answer list.
    pub fn credited(&self) -> Vec<&str> {
        match self {
            GroundTruth::Scores(scores) => scores
                .iter()
                .filter(|(_, &s)| s > 0.0)
                .map(|(a, _)| a.as_str())
                .collect(),
            GroundTruth::Annotators(answers) => answers.iter().map(String::as_str).collect(),
        }
    }
}

/// The official VQA accuracy of `answer` given the annotators' `answers`.
pub fn official_accuracy(answer: &str, answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let answer = clean(answer.replace(['\n', '\t'], " ").trim());
    let mut truth: Vec<String> = answers
        .iter()
        .map(|a| a.replace(['\n', '\t'], " ").trim().to_owned())
        .collect();
    let disagree = truth.iter().any(|a| *a != truth[0]);
    if disagree {
        truth = truth.iter().map(|a| strip_punctuation(a)).collect();
    }
    let matches = truth.iter().filter(|a| **a == answer).count();
    // Leaving out a matching answer leaves matches − 1 others, any other leaves matches.
    let total: f64 = truth
        .iter()
        .map(|a| {
            let others = if *a == answer { matches - 1 } else { matches };
            (others as f64 / 3.0).min(1.0)
        })
        .sum();
    total / truth.len() as f64
}

/// The official cleaning of a predicted answer: punctuation, then digits and articles.
pub fn clean(answer: &str) -> String {
    digits_and_articles(&strip_punctuation(answer))
}

const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// `processPunctuation`: each mark is deleted when it touches a space in the original text
/// (or the text has a digit,digit comma), else replaced by a space; then periods not followed
/// by a digit are deleted (at most 32: the official code passes `re.UNICODE` as the count).
fn strip_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit_comma = chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit());
    let mut out = text.to_owned();
    for p in PUNCTUATION {
        let touches_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        let with = if touches_space || digit_comma {
            ""
        } else {
            " "
        };
        out = out.replace(p, with);
    }
    let chars: Vec<char> = out.chars().collect();
    let mut result = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let next_is_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !next_is_digit && removed < 32 {
            removed += 1;
        } else {
            result.push(c);
        }
    }
    result
}

const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The official contraction table (keys with capitals never match lower-cased words there
/// either; they are kept for fidelity).
const CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// `processDigitArticle`: lower-case, split on whitespace, number words to digits, articles
/// dropped, contractions restored, joined by single spaces.
fn digits_and_articles(text: &str) -> String {
    let lookup = |table: &[(&str, &'static str)], w: &str| {
        table.iter().find(|(k, _)| *k == w).map(|(_, v)| *v)
    };
    text.to_lowercase()
        .split_whitespace()
        .map(|w| lookup(&NUMBERS, w).unwrap_or(w).to_owned())
        .filter(|w| !ARTICLES.contains(&w.as_str()))
        .map(|w| lookup(&CONTRACTIONS, &w).map_or(w, str::to_owned))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ten(answers: &[(&str, usize)]) -> Vec<String> {
        answers
            .iter()
            .flat_map(|&(a, n)| std::iter::repeat_n(a.to_owned(), n))
            .collect()
    }

    #[test]
    fn cleaning_follows_the_official_rules() {
        assert_eq!(clean("Two"), "2");
        assert_eq!(clean("a dog."), "dog");
        assert_eq!(clean("the  red,  bus"), "red bus");
        assert_eq!(clean("black-and-white"), "black and white");
        assert_eq!(clean("1,000"), "1000");
        assert_eq!(clean("3.5"), "3.5");
        assert_eq!(clean("dont"), "don't");
        assert_eq!(clean("yes!"), "yes");
    }

    #[test]
    fn leave_one_out_accuracy() {
        // 3 of 10 annotators agree: leaving out one of them leaves 2 (2/3), any other leaves 3.
        let truth = ten(&[("yes", 3), ("no", 7)]);
        let expected = (3.0 * (2.0 / 3.0) + 7.0) / 10.0;
        assert!((official_accuracy("yes", &truth) - expected).abs() < 1e-12);
        assert_eq!(official_accuracy("no", &truth), 1.0);
        assert_eq!(official_accuracy("maybe", &truth), 0.0);
        // One annotator: 0 others everywhere except... leaving out a non-match leaves 1 (1/3).
        let truth = ten(&[("cat", 1), ("dog", 9)]);
        assert!((official_accuracy("cat", &truth) - 0.3).abs() < 1e-12);
        // The prediction is cleaned; "Two" matches "2".
        assert_eq!(official_accuracy("Two", &ten(&[("2", 10)])), 1.0);
    }

    #[test]
    fn soft_scores_are_used_as_given() {
        let truth =
            GroundTruth::Scores(BTreeMap::from([("red".into(), 0.6), ("blue".into(), 0.3)]));
        assert_eq!(truth.accuracy("red"), 0.6);
        assert_eq!(truth.accuracy("green"), 0.0);
    }
}
