//! `fiedler synth`: byte-identical output per seed, and ground truth that agrees with the
//! pixels and with answers re-derived here from the scene description alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fiedler::input::regions::{read_features_file, read_obj36_tsv};
use serde_json::Value;

/// FNV-1a 64 of every file under `dir`: relative path, length and bytes, in path order.
fn tree_hash(dir: &Path) -> (u64, usize) {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, path);
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (rel, path) in &files {
        let data = fs::read(path).unwrap();
        eat(rel.as_bytes());
        eat(&(data.len() as u64).to_le_bytes());
        eat(&data);
    }
    (h, files.len())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiedler-synth-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// `fiedler synth --out dir` with `args`; the process's output.
fn synth(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(["synth", "--out", dir.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

/// Its standard output, once it succeeded.
fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// The hash of `fiedler synth --images 12 --seed 7`. It changes whenever the generator's output
/// changes: then check the new output (images, questions) and update it deliberately.
const EXPECTED_HASH: u64 = 0x3e1a_dcd7_4992_44c4;

#[test]
fn same_seed_same_bytes() {
    let (a, b, c) = (scratch("a"), scratch("b"), scratch("c"));
    fiedler::synth::write_set(&a, 12, 7, || {}).unwrap();
    let stdout = succeeded(&synth(&b, &["--images", "12", "--seed", "7"]));
    assert!(stdout.contains("wrote 12 images"), "{stdout}");
    fiedler::synth::write_set(&c, 12, 8, || {}).unwrap();
    let (ha, na) = tree_hash(&a);
    let (hb, nb) = tree_hash(&b);
    let (hc, _) = tree_hash(&c);
    // 12 images, masks, region files + regions.tsv and four JSON files
    assert_eq!(na, 12 * 3 + 5);
    assert_eq!((ha, na), (hb, nb), "two runs with one seed differ");
    assert_ne!(ha, hc, "another seed gives the same output");
    assert_eq!(
        ha, EXPECTED_HASH,
        "the output for seed 7 changed: new hash {ha:#018x}"
    );
    for d in [a, b, c] {
        fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn image_counts_out_of_range_are_refused_before_anything_is_written() {
    let too_many = (fiedler::synth::MAX_IMAGES + 1).to_string();
    // 0 is refused as the arguments are read (status 2), as every count is.
    for (images, code, says) in [
        ("0", 2, "must be at least 1"),
        (too_many.as_str(), 1, "at most 1000000"),
    ] {
        let dir = scratch(&format!("count-{images}"));
        let out = synth(&dir, &["--images", images]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "--images {images}: {stderr}");
        assert!(stderr.contains(says), "--images {images}: {stderr}");
        assert!(!dir.exists(), "--images {images} created {}", dir.display());
    }
}

#[test]
fn one_image_is_counted_in_the_singular() {
    let dir = scratch("one");
    let stdout = succeeded(&synth(&dir, &["--images", "1"]));
    let questions = json(&dir.join("questions.json"))["questions"]
        .as_array()
        .unwrap()
        .len();
    let expected = format!("wrote 1 image and {questions} questions to");
    assert!(stdout.starts_with(&expected), "{stdout}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn image_ids_do_not_depend_on_the_set_size() {
    // Image k of a seed is the same scene however many images are written (one stream each).
    let (a, b) = (scratch("n3"), scratch("n5"));
    fiedler::synth::write_set(&a, 3, 11, || {}).unwrap();
    fiedler::synth::write_set(&b, 5, 11, || {}).unwrap();
    for k in 1..=3 {
        let f = format!("images/synth_{k:012}.png");
        assert_eq!(
            fs::read(a.join(&f)).unwrap(),
            fs::read(b.join(&f)).unwrap(),
            "{f}"
        );
    }
    fs::remove_dir_all(a).unwrap();
    fs::remove_dir_all(b).unwrap();
}

struct Obj {
    id: usize,
    shape: String,
    color: String,
    cx: f64,
    cy: f64,
    radius: f64,
    rgb: [u8; 3],
    box_px: [u32; 4],
}

fn objects(image: &Value) -> Vec<Obj> {
    image["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| Obj {
            id: o["id"].as_u64().unwrap() as usize,
            shape: o["shape"].as_str().unwrap().into(),
            color: o["color"].as_str().unwrap().into(),
            cx: o["center"][0].as_f64().unwrap(),
            cy: o["center"][1].as_f64().unwrap(),
            radius: o["radius"].as_f64().unwrap(),
            rgb: [0, 1, 2].map(|c| o["rgb"][c].as_u64().unwrap() as u8),
            box_px: [0, 1, 2, 3].map(|c| o["box_px"][c].as_u64().unwrap() as u32),
        })
        .collect()
}

fn plural(shape: &str) -> String {
    if shape == "cross" {
        "crosses".into()
    } else {
        format!("{shape}s")
    }
}

/// Answer and relevant objects of a question, derived from the object list alone: the question
/// text is matched against the templates written out here, not the generator's code.
fn derive(q: &str, objs: &[Obj], width: f64) -> (String, Vec<usize>) {
    let strip = |p: &str, s: &str| {
        q.strip_prefix(p)
            .and_then(|r| r.strip_suffix(s))
            .map(str::to_owned)
    };
    let only = |f: &dyn Fn(&Obj) -> bool| {
        let m: Vec<&Obj> = objs.iter().filter(|o| f(o)).collect();
        assert_eq!(m.len(), 1, "{q}: the question's object is not unique");
        m[0]
    };
    if let Some(shape) = strip("what color is the ", "?") {
        let o = only(&|o| o.shape == shape);
        (o.color.clone(), vec![o.id])
    } else if let Some(color) = strip("what shape is the ", " object?") {
        let o = only(&|o| o.color == color);
        (o.shape.clone(), vec![o.id])
    } else if let Some(kind) = strip("is there a ", "?") {
        let (color, shape) = kind.split_once(' ').unwrap();
        let ids: Vec<usize> = objs
            .iter()
            .filter(|o| o.color == color && o.shape == shape)
            .map(|o| o.id)
            .collect();
        ((if ids.is_empty() { "no" } else { "yes" }).into(), ids)
    } else if let Some(shapes) = strip("how many ", " are there?") {
        let ids: Vec<usize> = objs
            .iter()
            .filter(|o| plural(&o.shape) == shapes)
            .map(|o| o.id)
            .collect();
        (ids.len().to_string(), ids)
    } else if let Some(kind) = strip("what is left of the ", "?") {
        let (color, shape) = kind.split_once(' ').unwrap();
        let r = only(&|o| o.color == color && o.shape == shape);
        let left: Vec<&Obj> = objs.iter().filter(|o| o.cx < r.cx).collect();
        assert_eq!(
            left.len(),
            1,
            "{q}: not exactly one object left of the reference"
        );
        for o in objs.iter().filter(|o| o.id != r.id) {
            assert!(
                (o.cx - r.cx).abs() >= 0.05 * width,
                "{q}: an object is level with the reference"
            );
        }
        (left[0].shape.clone(), vec![r.id, left[0].id])
    } else {
        panic!("unknown question template: {q}");
    }
}

#[test]
fn ground_truth_agrees_with_pixels_and_questions() {
    let dir = scratch("gt");
    let summary = fiedler::synth::write_set(&dir, 40, 3, || {}).unwrap();
    let gt = json(&dir.join("ground_truth.json"));
    let questions = json(&dir.join("questions.json"));
    let annotations = json(&dir.join("annotations.json"));
    let captions = json(&dir.join("captions.json"));
    let images: BTreeMap<u64, &Value> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| (im["image_id"].as_u64().unwrap(), im))
        .collect();
    assert_eq!(images.len(), 40);

    // Pixels: each object's mask is its shape where the description puts it, in its colour.
    let mut objects_seen = 0;
    for im in images.values() {
        let (w, h) = (
            im["width"].as_u64().unwrap() as u32,
            im["height"].as_u64().unwrap() as u32,
        );
        let rgb = image::open(dir.join(im["file"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let mask = image::open(dir.join(im["mask_file"].as_str().unwrap()))
            .unwrap()
            .to_luma8();
        assert_eq!(
            (rgb.width(), rgb.height(), mask.width(), mask.height()),
            (w, h, w, h)
        );
        let objs = objects(im);
        assert!((2..=6).contains(&objs.len()), "{} objects", objs.len());
        for o in &objs {
            objects_seen += 1;
            let (mut n, mut sx, mut sy) = (0usize, 0.0, 0.0);
            let mut bbox = [u32::MAX, u32::MAX, 0, 0];
            for (x, y, l) in mask.enumerate_pixels() {
                if l.0[0] as usize == o.id + 1 {
                    assert_eq!(
                        rgb.get_pixel(x, y).0,
                        o.rgb,
                        "mask pixel of object {} has another colour",
                        o.id
                    );
                    let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                    let d = ((px - o.cx).powi(2) + (py - o.cy).powi(2)).sqrt();
                    // every shape fits in 1.25 r (the triangle's base corners reach 1.242 r)
                    assert!(
                        d <= o.radius * 1.25 + 0.1,
                        "mask pixel outside the object's reach"
                    );
                    n += 1;
                    sx += px;
                    sy += py;
                    bbox = [
                        bbox[0].min(x),
                        bbox[1].min(y),
                        bbox[2].max(x + 1),
                        bbox[3].max(y + 1),
                    ];
                }
            }
            assert_eq!(bbox, o.box_px, "box of object {}", o.id);
            // Area against the shape's nominal area in units of r² (loose: pixel rounding).
            let r2 = o.radius * o.radius;
            let nominal = match o.shape.as_str() {
                "circle" => std::f64::consts::PI,
                "square" => 1.7 * 1.7,
                "triangle" => 0.5 * 1.9 * 1.8,
                "cross" => 2.0 * 0.66 * 2.0 - 0.66 * 0.66,
                s => panic!("unknown shape {s}"),
            } * r2;
            assert!(
                (n as f64 - nominal).abs() <= 0.2 * nominal + 6.0,
                "{} area {n} vs {nominal:.0}",
                o.shape
            );
            // Centroid at the centre (the triangle's sits lower: its base is wider than its apex).
            let (mx, my) = (sx / n as f64, sy / n as f64);
            assert!((mx - o.cx).abs() < 1.0, "{} centroid x", o.shape);
            let dy = if o.shape == "triangle" {
                0.2 * o.radius
            } else {
                0.0
            };
            assert!(
                (my - o.cy - dy).abs() < 1.0 + 0.05 * o.radius,
                "{} centroid y {my} vs {}",
                o.shape,
                o.cy
            );
        }
        // Regions: the features file and the TSV line say the same; object regions cover their object.
        let stem = im["file"]
            .as_str()
            .unwrap()
            .trim_start_matches("images/")
            .trim_end_matches(".png");
        let feats = read_features_file(&dir.join(im["regions_file"].as_str().unwrap())).unwrap();
        let tsv = read_obj36_tsv(&dir.join("regions.tsv"), stem).unwrap();
        assert_eq!(feats.features, tsv.features);
        assert_eq!(tsv.image_size, Some((h as usize, w as usize)));
        for (a, b) in feats.boxes.iter().zip(&tsv.boxes) {
            assert!((a - b).abs() < 1e-6);
        }
        let region_objects = im["region_objects"].as_array().unwrap();
        assert_eq!(region_objects.len(), feats.count);
        for (r, obj) in region_objects.iter().enumerate() {
            if let Some(id) = obj.as_u64() {
                let o = &objs[id as usize];
                let b = &feats.boxes[r * 4..r * 4 + 4];
                // x0, y0, x1, y1, normalised by the width, height, width, height
                for (k, size) in [w, h, w, h].into_iter().enumerate() {
                    assert!((b[k] * size as f32 - o.box_px[k] as f32).abs() <= 1.5 + 1e-3);
                }
                // the colour one-hot (noise σ 0.1) points at the object's colour
                let f = &feats.features[r * feats.dim..(r + 1) * feats.dim];
                let best = (0..6).max_by(|&i, &j| f[i].total_cmp(&f[j])).unwrap();
                let colours = ["red", "green", "blue", "yellow", "purple", "orange"];
                assert_eq!(colours[best], o.color);
            }
        }
        let objects_in_regions = region_objects.iter().filter(|v| !v.is_null()).count();
        assert_eq!(objects_in_regions, objs.len());
    }
    assert!(objects_seen >= 80);

    // Questions: VQA-v2 layout, and every answer re-derived from the object list.
    let qs = questions["questions"].as_array().unwrap();
    let anns = annotations["annotations"].as_array().unwrap();
    let gq = gt["questions"].as_array().unwrap();
    assert_eq!(qs.len(), summary.questions);
    assert_eq!((anns.len(), gq.len()), (qs.len(), qs.len()));
    assert!(qs.len() >= 40 * 3, "{} questions", qs.len());
    let mut kinds = BTreeMap::new();
    for ((q, a), g) in qs.iter().zip(anns).zip(gq) {
        let text = q["question"].as_str().unwrap();
        assert_eq!(q["question_id"], a["question_id"]);
        assert_eq!(q["question_id"], g["question_id"]);
        assert_eq!(q["image_id"], a["image_id"]);
        let answers = a["answers"].as_array().unwrap();
        assert_eq!(answers.len(), 10);
        let answer = a["multiple_choice_answer"].as_str().unwrap();
        assert!(answers.iter().all(|x| x["answer"] == answer));
        let im = images[&q["image_id"].as_u64().unwrap()];
        let objs = objects(im);
        let (expected, relevant) = derive(text, &objs, im["width"].as_f64().unwrap());
        assert_eq!(answer, expected, "{text}");
        assert_eq!(g["answer"], answer);
        let mut got: Vec<usize> = g["relevant_objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut want = relevant.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{text}: relevant objects");
        for (k, id) in g["relevant_objects"].as_array().unwrap().iter().enumerate() {
            let o = &objs[id.as_u64().unwrap() as usize];
            let b: Vec<u64> = g["relevant_boxes"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(b, o.box_px.map(u64::from).to_vec());
        }
        // relevant words: indices into the question's words, and the words they name
        let words: Vec<&str> = text.split(' ').map(|w| w.trim_end_matches('?')).collect();
        let idx = g["relevant_words"].as_array().unwrap();
        let named = g["relevant_word_text"].as_array().unwrap();
        assert!(!idx.is_empty(), "{text}: no relevant words");
        assert_eq!(idx.len(), named.len(), "{text}");
        for (i, word) in idx.iter().zip(named) {
            assert_eq!(words[i.as_u64().unwrap() as usize], word.as_str().unwrap());
        }
        *kinds
            .entry(a["question_type"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(kinds.len(), 5, "every template is used: {kinds:?}");

    // Caption sets: the true caption lists the objects left to right; each distractor names an
    // object the scene does not have.
    let parse = |c: &str| -> Vec<(String, String)> {
        c.replace(" and ", ", ")
            .split(", ")
            .map(|part| {
                let w: Vec<&str> = part.split(' ').collect();
                assert_eq!(w.len(), 3, "{c:?}");
                assert_eq!(w[0], if w[1] == "orange" { "an" } else { "a" }, "{c:?}");
                (w[1].to_owned(), w[2].to_owned())
            })
            .collect()
    };
    for set in captions.as_array().unwrap() {
        let im = images[&set["image_id"].as_u64().unwrap()];
        let mut objs = objects(im);
        objs.sort_by(|a, b| a.cx.total_cmp(&b.cx));
        let scene: Vec<(String, String)> = objs
            .iter()
            .map(|o| (o.color.clone(), o.shape.clone()))
            .collect();
        let caps: Vec<&str> = set["captions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let correct = set["correct"].as_u64().unwrap() as usize;
        assert_eq!(parse(caps[correct]), scene, "true caption");
        assert!(caps.len() >= 3, "{caps:?}");
        for (i, c) in caps.iter().enumerate().filter(|&(i, _)| i != correct) {
            let said = parse(c);
            assert_eq!(said.len(), scene.len());
            let wrong: Vec<usize> = (0..said.len()).filter(|&k| said[k] != scene[k]).collect();
            assert_eq!(wrong.len(), 1, "distractor {i} {c:?} changes one object");
            let (colour, shape) = &said[wrong[0]];
            assert!(
                objs.iter().all(|o| &o.color != colour) || objs.iter().all(|o| &o.shape != shape),
                "distractor {c:?} names a colour or shape the scene has"
            );
        }
    }
    fs::remove_dir_all(dir).unwrap();
}

/// A set written over an earlier one loses the earlier JSON before its first image: cut short
/// (here by a panic after one image), it leaves no questions or ground truth that would pass
/// its mixed images off as either set.
#[test]
fn a_set_cut_short_over_an_earlier_one_leaves_no_json() {
    let dir = scratch("cut-short");
    fiedler::synth::write_set(&dir, 3, 1, || {}).unwrap();
    let files = [
        "questions.json",
        "annotations.json",
        "ground_truth.json",
        "captions.json",
    ];
    assert!(files.iter().all(|f| dir.join(f).is_file()));
    let mut images = 0;
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fiedler::synth::write_set(&dir, 3, 2, || {
            images += 1;
            assert!(images < 2, "cut short");
        })
    }));
    assert!(cut.is_err());
    for f in files {
        assert!(!dir.join(f).exists(), "{f} of the earlier set is left");
    }
    fiedler::synth::write_set(&dir, 3, 2, || {}).unwrap();
    assert!(files.iter().all(|f| dir.join(f).is_file()));
    fs::remove_dir_all(dir).unwrap();
}

/// A smaller set written over a larger one leaves none of the larger one's images, masks or
/// features files beside its own (the folder then held images no JSON named); files of other
/// names there stay.
#[test]
fn a_set_over_a_larger_one_replaces_its_files() {
    let dir = scratch("smaller");
    fiedler::synth::write_set(&dir, 3, 5, || {}).unwrap();
    let mine = [
        dir.join("images/mine.png"),
        dir.join("regions/synth_1.safetensors"),
    ];
    for path in &mine {
        fs::write(path, "mine").unwrap();
    }
    fiedler::synth::write_set(&dir, 2, 5, || {}).unwrap();
    let names = |sub: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let set =
        |ext: &str| -> Vec<String> { (1..=2).map(|id| format!("synth_{id:012}.{ext}")).collect() };
    assert_eq!(
        names("images"),
        [vec!["mine.png".to_owned()], set("png")].concat()
    );
    assert_eq!(names("masks"), set("png"));
    assert_eq!(
        names("regions"),
        [set("safetensors"), vec!["synth_1.safetensors".to_owned()]].concat()
    );
    fs::remove_dir_all(dir).unwrap();
}

/// An `--out` that is a file is refused as such, and the file left as it was (it said
/// "cannot write FILE/images: Not a directory").
#[test]
fn an_out_that_is_a_file_is_refused() {
    let dir = scratch("out-file");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("set");
    fs::write(&file, "mine").unwrap();
    let out = synth(&file, &["--images", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a file; give a folder for the set"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
    fs::remove_dir_all(dir).unwrap();
}
