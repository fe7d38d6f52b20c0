//! Library warnings go to a handler the program installs (here: collected), not only to
//! stderr, and back to stderr after a reset. One test, since the handler is global.

mod common;

use std::sync::{Arc, Mutex};

use common::fixtures;
use fiedler::eval::clip::{read_captions, Retrievals};
use fiedler::input::text::TextTokenizer;
use fiedler::session::ClipSession;
use fiedler::warning;

#[test]
fn warnings_reach_an_installed_handler() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&seen);
    warning::set_handler(move |m| sink.lock().unwrap().push(m.to_owned()));

    let tokenizer = TextTokenizer::from_dir(&fixtures().join("clip"), 8, 0).unwrap();
    let long = "a photo of a cat sitting on a red mat in the sun";
    let batch = tokenizer.encode_batch(&[long]).unwrap();
    assert_eq!(batch.truncated, vec![true]);
    // Control and bidi characters are escaped in the message, not passed on to act.
    let hidden = "a \u{202e}tac\u{202c} photo\0 of a cat sitting on a red mat in the sun";
    tokenizer.encode_batch(&[hidden]).unwrap();
    // A special token spelt out in a text is read as that token: said, once per token.
    let clip = TextTokenizer::from_dir(&fixtures().join("clip"), 32, 0).unwrap();
    clip.encode_batch(&["a cat", "a cat <|endoftext|> a dog <|endoftext|>"])
        .unwrap();
    let bert = TextTokenizer::from_dir(&fixtures().join("vilt"), 24, 0).unwrap();
    bert.encode_batch(&["what [SEP] is [UNK] it?", "what is it?"])
        .unwrap();
    // Words the vocabulary cannot spell are said as such, not as a spelt [UNK].
    bert.encode_batch(&["is it 🙂🙂?"]).unwrap();
    // A caption retrieval that fails (its image is gone) is said, and left unknown.
    let dir = std::env::temp_dir().join(format!("fiedler-warnings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let captions = dir.join("captions.json");
    let image = fixtures().join("images/catdog.png");
    let sets = serde_json::json!([
        {"image_id": 1, "file": image, "correct": 0, "captions": ["a cat", "a dog"]},
        {"image_id": 2, "file": "gone.png", "correct": 0, "captions": ["a cat", "a bird"]},
        {"image_id": 3, "file": image, "correct": 0, "captions": ["a cat"]},
    ]);
    std::fs::write(&captions, sets.to_string()).unwrap();
    let (_, sets) = read_captions(&captions).unwrap();
    let session = ClipSession::open(&fixtures().join("clip")).unwrap();
    let retrievals = Retrievals::new(&session, &sets);
    assert!(retrievals.of("1").unwrap().is_some());
    assert_eq!(retrievals.of("2").unwrap(), None);
    // One caption is retrieved against nothing: no retrieval, and nothing to warn of.
    assert_eq!(retrievals.of("3").unwrap(), None);
    warning::reset_handler();

    // A handler that goes quiet after its first warning (it resets the handler from inside
    // a warning): the work goes on, and later warnings go back to stderr.
    let first = Arc::new(Mutex::new(Vec::<String>::new()));
    let once = Arc::clone(&first);
    warning::set_handler(move |m| {
        once.lock().unwrap().push(m.to_owned());
        warning::reset_handler();
    });
    tokenizer.encode_batch(&[long, long]).unwrap();
    assert_eq!(first.lock().unwrap().len(), 1);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(
        seen[4],
        "text \"is it 🙂🙂?\" holds \"🙂🙂\" that the model's vocabulary cannot spell: the \
         tokenizer reads it as its unknown token"
    );
    assert!(
        seen[5].starts_with("sample 2: no caption retrieval: ") && seen[5].contains("gone.png"),
        "{seen:?}"
    );
    assert_eq!(
        seen[2],
        "text \"a cat <|endoftext|> a dog <|endoftext|>\" holds <|endoftext|>, which the \
         tokenizer reads as the model's special token, not as words"
    );
    assert!(
        seen[3].starts_with("text \"what [SEP] is [UNK] it?\" holds [SEP], [UNK], which"),
        "{seen:?}"
    );
    assert!(
        seen[0].starts_with("text \"a photo of a cat") && seen[0].contains("truncated"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with("text \"a \\u{202e}tac\\u{202c} photo\\0 of"),
        "{seen:?}"
    );
    assert!(!seen[1].contains(['\u{202e}', '\0']), "{seen:?}");
}
