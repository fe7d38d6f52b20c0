//! Image preprocessing against transformers' `CLIPImageProcessor` (goldens written by
//! tools/reference/make_clip_fixture.py) and against hand-computed Pillow resampling.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, jpeg_with_orientation, max_abs_diff, Golden};
use fiedler::input::image::{
    center_crop, exif_orientation, load_image, resize, resize_output_size, ImageProcessorConfig,
    Resample, ResizeTo, OPENAI_CLIP_STD,
};
use fiedler::input::InputError;
use image::metadata::Orientation;
use image::RgbImage;
use safetensors::{Dtype, SafeTensors};

/// One 8-bit level after rescale and normalisation, in the channel with the smallest std:
/// 1/255/0.26130258 ≈ 0.0150.
fn one_level() -> f32 {
    1.0 / 255.0
        / OPENAI_CLIP_STD
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
}

fn golden() -> Golden {
    Golden::open(&fixtures().join("clip/golden.safetensors"))
}

fn image_path(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

fn processor() -> ImageProcessorConfig {
    ImageProcessorConfig::from_dir(&fixtures().join("clip"), 48).expect("fixture config parses")
}

/// The golden `preprocess.<stem>.resized_u8` (PIL's resize output, HWC).
fn golden_resized(stem: &str) -> (Vec<u8>, Vec<usize>) {
    let bytes = std::fs::read(fixtures().join("clip/golden.safetensors")).expect("golden file");
    let st = SafeTensors::deserialize(&bytes).expect("golden parses");
    let t = st
        .tensor(&format!("preprocess.{stem}.resized_u8"))
        .expect("resized_u8 present");
    assert_eq!(t.dtype(), Dtype::U8);
    (t.data().to_vec(), t.shape().to_vec())
}

/// Resizes a fixture image as the processor does and returns it with PIL's, as flat HWC bytes.
fn resized_pair(stem: &str, file: &str) -> (Vec<u8>, Vec<u8>) {
    let image = load_image(&image_path(file)).expect("fixture image decodes");
    let (h, w) = resize_output_size(
        image.height() as usize,
        image.width() as usize,
        ResizeTo::ShortestEdge(48),
    );
    let ours = resize(&image, w, h, Resample::Bicubic);
    let (theirs, shape) = golden_resized(stem);
    assert_eq!(shape, vec![h, w, 3], "{file}: resized size");
    (ours.into_raw(), theirs)
}

#[test]
fn png_resize_equals_pillow_bytes() {
    for (stem, file) in [
        ("catdog", "catdog.png"),
        ("odd", "odd.png"),
        ("tall", "tall.png"),
    ] {
        let (ours, theirs) = resized_pair(stem, file);
        assert_eq!(ours, theirs, "{file}: resized bytes differ from PIL's");
    }
}

#[test]
fn png_pixel_values_equal_transformers() {
    let golden = golden();
    let processor = processor();
    for (stem, file) in [
        ("catdog", "catdog.png"),
        ("odd", "odd.png"),
        ("tall", "tall.png"),
    ] {
        let ours = processor
            .preprocess_file(&image_path(file))
            .expect("preprocess");
        assert_eq!((ours.height, ours.width), (48, 48));
        let theirs = golden.f32(&format!("preprocess.{stem}.pixel_values"));
        let (diff, at) = max_abs_diff(&ours.data, &theirs);
        // Same bytes after the resize and the same float32 arithmetic afterwards: bit-identical.
        assert_eq!(diff, 0.0, "{file}: max |Δ| = {diff} at {at}");
    }
}

/// The JPEG is decoded by zune-jpeg here and by libjpeg-turbo under PIL; their IDCT and YCbCr →
/// RGB conversion round differently. Measured on this file (4:4:4, 640×428): 1.0% of decoded
/// bytes differ, by at most 3 levels; after the 640×428 → 71×48 bicubic downscale 138 of 10224
/// bytes differ, by exactly 1 level, so pixel values differ by at most one level
/// (1/255/0.26130258 ≈ 0.01501). The bounds are one level.
#[test]
fn jpeg_pixel_values_within_decoder_difference() {
    let (ours, theirs) = resized_pair("coco_127510", "coco_127510.jpg");
    let worst_level = ours
        .iter()
        .zip(&theirs)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap_or(0);
    let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
    println!(
        "coco_127510.jpg resized: {differing} of {} bytes differ, by at most {worst_level} levels",
        ours.len()
    );
    assert!(
        worst_level <= 1,
        "resized bytes differ by {worst_level} levels"
    );

    let pixels = processor()
        .preprocess_file(&image_path("coco_127510.jpg"))
        .expect("preprocess");
    let theirs = golden().f32("preprocess.coco_127510.pixel_values");
    let (diff, at) = max_abs_diff(&pixels.data, &theirs);
    println!(
        "coco_127510.jpg pixel_values: max |Δ| = {diff} ({:.2} levels) at {at}",
        diff / one_level()
    );
    assert!(diff <= one_level() + 1e-5, "max |Δ| = {diff} at {at}");
}

#[test]
fn batch_equals_transformers_batch() {
    let files = ["catdog.png", "coco_127510.jpg", "odd.png"];
    let paths: Vec<PathBuf> = files.iter().map(|f| image_path(f)).collect();
    let batch = processor().preprocess_batch(&paths).expect("batch");
    assert_eq!((batch.batch, batch.height, batch.width), (3, 48, 48));
    let theirs = golden().f32("b3.pixel_values");
    let per_image = 3 * 48 * 48;
    for (i, file) in files.iter().enumerate() {
        let range = i * per_image..(i + 1) * per_image;
        let (diff, _) = max_abs_diff(&batch.data[range.clone()], &theirs[range]);
        let bound = if file.ends_with(".jpg") {
            one_level() + 1e-5
        } else {
            0.0
        };
        assert!(diff <= bound, "{file}: max |Δ| = {diff}");
    }
}

#[test]
fn fixture_config_is_clip_defaults_at_48() {
    assert_eq!(processor(), ImageProcessorConfig::clip(48));
}

// ----------------------------------------------------------------------------------------------
// Pillow's resampler on synthetic images (values computed by hand from Resample.c's formulas,
// and confirmed with Pillow's Image.resize on the same bytes).

fn row(values: &[[u8; 3]]) -> RgbImage {
    let bytes = values.iter().flatten().copied().collect();
    RgbImage::from_raw(values.len() as u32, 1, bytes).expect("row image")
}

fn grey_row(values: &[u8]) -> RgbImage {
    row(&values.iter().map(|&v| [v; 3]).collect::<Vec<_>>())
}

fn channel0(image: &RgbImage) -> Vec<u8> {
    image.pixels().map(|p| p.0[0]).collect()
}

/// 4 → 2 pixels: scale 2, so the kernel is stretched to support 4. Output 0 has centre 1.0 and
/// taps at x = 0..3 with kernel arguments (x − 1 + 0.5)/2 = −0.25, 0.25, 0.75, 1.25, i.e. cubic
/// weights 0.8671875, 0.8671875, 0.2265625, −0.0703125 (sum 1.890625); normalised and in 22-bit
/// fixed point: 1923834, 1923834, 502623, −155987. With pixels 0, 100, 200, 255 the sum plus one
/// half is 60.85 → 60; output 1 mirrors it: 221.18 → 221.
#[test]
fn bicubic_downscale_matches_hand_computation() {
    let out = resize(&grey_row(&[0, 100, 200, 255]), 2, 1, Resample::Bicubic);
    assert_eq!(channel0(&out), vec![60, 221]);
}

/// 2 → 5 pixels (upscale, support 2): the first output has centre 0.2 and weights
/// (4609778, −415474)/2^22 on pixels 10, 200, i.e. −8.3 → clipped to 0; the middle one weighs
/// both halves equally: 105.5 → 105.
#[test]
fn bicubic_upscale_clips_and_rounds_like_pillow() {
    let out = resize(&grey_row(&[10, 200]), 5, 1, Resample::Bicubic);
    assert_eq!(channel0(&out), vec![0, 22, 105, 188, 219]);
}

/// Both passes with different channels: height 1 → 3 replicates the row, width as above.
#[test]
fn bicubic_two_pass_per_channel() {
    let out = resize(
        &row(&[[10, 20, 30], [200, 100, 0]]),
        5,
        3,
        Resample::Bicubic,
    );
    let expected_row = [
        [0, 12, 33],
        [22, 25, 28],
        [105, 60, 15],
        [188, 95, 2],
        [219, 108, 0],
    ];
    let expected: Vec<u8> = (0..3)
        .flat_map(|_| expected_row.iter().flatten().copied())
        .collect();
    assert_eq!(out.into_raw(), expected);
}

/// Outputs of Pillow 13.0.0's `Image.resize((w, 1), filter)` on this 6-pixel grey row, for every
/// filter a preprocessor_config.json may name (shrinking to 4 and enlarging to 9).
#[test]
fn every_filter_matches_pillow_vectors() {
    let input = grey_row(&[0, 40, 255, 90, 10, 200]);
    let cases: [(Resample, [u8; 4], [u8; 9]); 5] = [
        (
            Resample::Lanczos,
            [0, 189, 71, 123],
            [2, 0, 79, 241, 209, 53, 0, 110, 220],
        ),
        (
            Resample::Bilinear,
            [15, 165, 82, 129],
            [0, 20, 76, 219, 173, 77, 23, 105, 200],
        ),
        (
            Resample::Bicubic,
            [5, 180, 72, 129],
            [0, 6, 70, 239, 191, 69, 7, 106, 212],
        ),
        (
            Resample::Box,
            [20, 255, 50, 200],
            [0, 40, 40, 255, 90, 90, 10, 200, 200],
        ),
        (
            Resample::Hamming,
            [11, 193, 72, 147],
            [0, 20, 46, 249, 173, 88, 12, 105, 200],
        ),
    ];
    for (filter, shrunk, enlarged) in cases {
        assert_eq!(
            channel0(&resize(&input, 4, 1, filter)),
            shrunk,
            "{filter:?} → 4"
        );
        assert_eq!(
            channel0(&resize(&input, 9, 1, filter)),
            enlarged,
            "{filter:?} → 9"
        );
    }
}

#[test]
fn every_filter_keeps_a_constant_image_constant() {
    let flat = RgbImage::from_pixel(13, 7, image::Rgb([17, 128, 250]));
    for filter in [
        Resample::Lanczos,
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Box,
        Resample::Hamming,
    ] {
        for (w, h) in [(5, 3), (29, 11), (13, 2), (4, 7)] {
            let out = resize(&flat, w, h, filter);
            assert_eq!((out.width(), out.height()), (w as u32, h as u32));
            assert!(
                out.pixels().all(|p| p.0 == [17, 128, 250]),
                "{filter:?} {w}×{h}"
            );
        }
    }
}

#[test]
fn same_size_resize_is_identity() {
    let image = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 40) as u8, (y * 60) as u8, 7]));
    assert_eq!(resize(&image, 5, 4, Resample::Bicubic), image);
}

/// A strip whose resize to the shortest edge would take more than an image may take
/// decoded (100000×1 to 48 px high: 4.8M px wide, 691 MB) is refused before it is resized;
/// one just within (10000×1: 480000 × 48, 69 MB) is resized and cropped.
#[test]
fn a_resize_beyond_the_decoded_limit_is_an_error() {
    let strip = RgbImage::from_pixel(100_000, 1, image::Rgb([0, 200, 0]));
    let err = processor().preprocess(&strip, "strip").unwrap_err();
    assert!(matches!(err, InputError::ResizedTooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("strip is 100000×1 pixels, which resizes to 4800000×48")
            && msg.contains("512 MiB"),
        "{msg}"
    );
    let strip = RgbImage::from_pixel(10_000, 1, image::Rgb([0, 200, 0]));
    let pixels = processor().preprocess(&strip, "strip").unwrap();
    assert_eq!((pixels.height, pixels.width), (48, 48));
}

#[test]
fn shortest_edge_sizes_truncate_like_python() {
    let se = ResizeTo::ShortestEdge(48);
    // int(48 * 301 / 173) = int(83.51) = 83; the fixture's odd.png.
    assert_eq!(resize_output_size(173, 301, se), (48, 83));
    // Portrait: the width is the short edge.
    assert_eq!(resize_output_size(640, 428, se), (71, 48));
    // Exact quotient, square, and an extreme strip.
    assert_eq!(resize_output_size(3, 7, se), (48, 112));
    assert_eq!(resize_output_size(9, 9, se), (48, 48));
    assert_eq!(resize_output_size(1000, 3, se), (16000, 48));
    assert_eq!(
        resize_output_size(
            1000,
            3,
            ResizeTo::Exact {
                height: 5,
                width: 6
            }
        ),
        (5, 6)
    );
}

#[test]
fn odd_aspect_ratio_preprocesses_to_crop_size() {
    let image = RgbImage::from_fn(301, 17, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let pixels = ImageProcessorConfig::clip(48)
        .preprocess(&image, "strip")
        .expect("preprocess");
    assert_eq!(
        (pixels.height, pixels.width, pixels.data.len()),
        (48, 48, 3 * 48 * 48)
    );
    assert!(pixels.data.iter().all(|x| x.is_finite()));
}

#[test]
fn center_crop_uses_floor_offsets() {
    let image = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
    // top = (4 − 2) // 2 = 1, left = (5 − 2) // 2 = 1.
    let crop = center_crop(&image, 2, 2);
    let coords: Vec<[u8; 2]> = crop.pixels().map(|p| [p.0[0], p.0[1]]).collect();
    assert_eq!(coords, vec![[1, 1], [2, 1], [1, 2], [2, 2]]);
    // (5 − 2) // 2 = 1 also for an odd margin; (4 − 3) // 2 = 0.
    let crop = center_crop(&image, 3, 2);
    assert_eq!(crop.get_pixel(0, 0).0[..2], [1, 0]);
}

#[test]
fn center_crop_pads_with_zeros_when_larger() {
    let image = RgbImage::from_pixel(3, 3, image::Rgb([9, 9, 9]));
    // top = (3 − 4) // 2 = −1: one zero row/column before the image, none after.
    let crop = center_crop(&image, 4, 4);
    for y in 0..4 {
        for x in 0..4 {
            let expected = if x == 0 || y == 0 { 0 } else { 9 };
            assert_eq!(crop.get_pixel(x, y).0, [expected; 3], "({x}, {y})");
        }
    }
}

#[test]
fn rescale_and_normalise_follow_transformers_float_steps() {
    let image = RgbImage::from_pixel(1, 1, image::Rgb([0, 128, 255]));
    let mut config = ImageProcessorConfig::clip(1);
    config.do_resize = false;
    let pixels = config.preprocess(&image, "dot").expect("preprocess");
    let expected: Vec<f32> = [0u8, 128, 255]
        .iter()
        .enumerate()
        .map(|(c, &v)| {
            let x = (f64::from(v) * (1.0 / 255.0)) as f32;
            (x - config.image_mean[c]) / config.image_std[c]
        })
        .collect();
    assert_eq!(pixels.data, expected);
}

// ----------------------------------------------------------------------------------------------
// preprocessor_config.json variants and errors

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("fiedler-input-image-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn config_from(name: &str, json: &str) -> Result<ImageProcessorConfig, InputError> {
    let dir = scratch_dir(name);
    std::fs::write(dir.join("preprocessor_config.json"), json).expect("write config");
    ImageProcessorConfig::from_dir(&dir, 224)
}

#[test]
fn legacy_integer_sizes_parse() {
    let config = config_from("legacy", r#"{"size": 64, "crop_size": 60, "resample": 2}"#).unwrap();
    assert_eq!(config.size, ResizeTo::ShortestEdge(64));
    assert_eq!((config.crop_height, config.crop_width), (60, 60));
    assert_eq!(config.resample, Resample::Bilinear);
    let exact = config_from("exact", r#"{"size": {"height": 30, "width": 40}}"#).unwrap();
    assert_eq!(
        exact.size,
        ResizeTo::Exact {
            height: 30,
            width: 40
        }
    );
}

#[test]
fn missing_preprocessor_config_gives_model_size_defaults() {
    let dir = scratch_dir("absent");
    let _ = std::fs::remove_file(dir.join("preprocessor_config.json"));
    assert_eq!(
        ImageProcessorConfig::from_dir(&dir, 336).unwrap(),
        ImageProcessorConfig::clip(336)
    );
}

#[test]
fn unsupported_resample_is_an_error() {
    let err = config_from("nearest", r#"{"resample": 0}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("preprocessor_config.json"), "{err}");
    assert!(err.contains("resample") && err.contains("found 0"), "{err}");
}

#[test]
fn bad_config_values_name_the_field() {
    let err = config_from("badstd", r#"{"image_std": [0.2, 0.0, 0.3]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("image_std"), "{err}");
    let err = config_from("badsize", r#"{"size": {"longest_edge": 3}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`size`"), "{err}");
    let err = config_from("badjson", "{ nope").unwrap_err().to_string();
    assert!(
        err.contains("not valid JSON") && err.contains("preprocessor_config.json"),
        "{err}"
    );
}

fn assert_names(err: &InputError, path: &Path, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(what), "{msg}");
}

#[test]
fn missing_image_names_the_path() {
    let path = scratch_dir("missing").join("no-such-image.png");
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, InputError::ImageNotFound { .. }), "{err:?}");
    assert_names(&err, &path, "not found");
}

#[test]
fn non_image_bytes_name_the_path() {
    let path = scratch_dir("text").join("notes.png");
    std::fs::write(&path, "this is not an image\n").expect("write");
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, InputError::ImageDecode { .. }), "{err:?}");
    assert_names(&err, &path, "not a readable image");
    assert_names(&err, &path, "PNG, JPEG, WebP, BMP, TIFF, GIF");
}

/// WebP (lossless, with and without alpha), BMP, TIFF (LZW) and GIF files that Pillow wrote
/// (tools/reference/make_format_fixtures.py) load as Pillow's `Image.open(path).convert("RGB")`
/// reads them, exactly: tall.png's pixels for the lossless ones, the palette's colours for the
/// GIF, also where its pixels are transparent.
#[test]
fn webp_bmp_tiff_and_gif_load_as_pillow_reads_them() {
    let formats = image_path("formats");
    let tall = load_image(&image_path("tall.png")).unwrap();
    for name in ["tall.webp", "tall-rgba.webp", "tall.bmp", "tall.tiff"] {
        let loaded = load_image(&formats.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(loaded == tall, "{name} differs from tall.png");
    }
    let gif = load_image(&formats.join("tall.gif")).unwrap();
    let pillow = load_image(&formats.join("tall-gif-rgb.png")).unwrap();
    assert!(
        gif == pillow,
        "tall.gif differs from Pillow's convert(\"RGB\")"
    );
    assert!(
        gif != tall,
        "the GIF's 64 colours should differ from tall.png"
    );
}

/// GIFs written byte by byte (tools/reference/make_format_fixtures.py) load as Pillow's
/// `Image.open(path).convert("RGB")` reads them, exactly: around a first frame smaller than the
/// logical screen, the transparent index's colour or else index 0's (not the background colour
/// the file names); the image grown to a frame that runs past the screen; black for indices past
/// the colour table; the index as grey level where the table is the identity grey ramp or there
/// is none; frame 0 of an animated GIF.
#[test]
fn gif_first_frame_on_its_screen_loads_as_pillow_reads_it() {
    let gifs = image_path("formats/gif");
    let mut differences = Vec::new();
    for stem in [
        "offset",
        "offset-transparent",
        "short-palette",
        "grey-levels",
        "no-table",
        "animated",
    ] {
        let gif = match load_image(&gifs.join(format!("{stem}.gif"))) {
            Ok(gif) => gif,
            Err(e) => {
                differences.push(e.to_string());
                continue;
            }
        };
        let pillow = load_image(&gifs.join(format!("{stem}-rgb.png"))).expect("reference PNG");
        if gif.dimensions() != pillow.dimensions() {
            differences.push(format!(
                "{stem}.gif is {:?} pixels, Pillow's {:?}",
                gif.dimensions(),
                pillow.dimensions()
            ));
        } else if let Some((x, y, p)) = gif
            .enumerate_pixels()
            .find(|&(x, y, p)| p != pillow.get_pixel(x, y))
        {
            differences.push(format!(
                "{stem}.gif has {p:?} at ({x}, {y}), Pillow {:?}",
                pillow.get_pixel(x, y)
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "differ from Pillow's convert(\"RGB\"):\n{}",
        differences.join("\n")
    );
}

/// A 1×1 frame at (65535, 65535) on a 1×1 screen would grow the image to 65536² pixels (12 GiB
/// in RGB), which Pillow refuses too (`DecompressionBombError`); cropping it to the screen, as
/// the image crate does, would give other pixels than Pillow's.
#[test]
fn gif_frame_far_off_its_screen_is_refused_naming_the_file() {
    let mut bytes = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
    bytes.extend([0, 0, 0, 255, 255, 255]); // the global table: black, white
    bytes.extend(b",\xff\xff\xff\xff\x01\x00\x01\x00\x00"); // 1×1 at (65535, 65535)
    bytes.extend([2, 2, 0x44, 0x01, 0, b';']); // LZW: clear, index 0, end
    let path = scratch_dir("gif-far").join("far.gif");
    std::fs::write(&path, &bytes).expect("write");
    let err = load_image(&path).unwrap_err();
    assert_names(&err, &path, "65536×65536 pixels");
}

#[test]
fn empty_file_names_the_path() {
    let path = scratch_dir("empty").join("empty.jpg");
    std::fs::write(&path, b"").expect("write");
    let err = load_image(&path).unwrap_err();
    assert_names(&err, &path, "not a readable image: the file is empty");
}

/// An image too large to decode says its size, not the decoder's "Memory limit exceeded". (A
/// BMP header alone: 30000×30000 pixels at 24 bits, 2.7 GB decoded.)
#[test]
fn image_too_large_to_decode_says_its_size() {
    let (w, h) = (30_000u32, 30_000u32);
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&(54 + 16u32).to_le_bytes()); // file size (the pixels are missing)
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend_from_slice(&w.to_le_bytes());
    bmp.extend_from_slice(&h.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes()); // planes
    bmp.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
    bmp.extend_from_slice(&[0; 24]); // no compression; sizes, resolution, palette: 0
    bmp.extend_from_slice(&[0; 16]);
    let path = scratch_dir("huge").join("huge.bmp");
    std::fs::write(&path, &bmp).expect("write");
    let err = load_image(&path).unwrap_err();
    assert_names(
        &err,
        &path,
        "it is 30000×30000 pixels, more than the decoder's memory limit allows",
    );
}

/// A TIFF of 32-bit grey samples (Pillow's modes F and I), which the decoder does not read,
/// is refused with what to do, not the decoder's "color type Unknown(32)". (A 1×1 TIFF written
/// here: ten tags, then its one sample; SampleFormat 3 is floating point, 2 signed integer.)
#[test]
fn a_32_bit_grey_tiff_is_refused_with_what_to_do() {
    for (format, name) in [(3u16, "float"), (2, "int")] {
        let mut tiff = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
        let data_at = 8 + 2 + 10 * 12 + 4;
        let tags: [(u16, u16, u32); 10] = [
            (256, 3, 1),                 // width
            (257, 3, 1),                 // height
            (258, 3, 32),                // bits per sample
            (259, 3, 1),                 // no compression
            (262, 3, 1),                 // black is zero
            (273, 4, data_at),           // strip offset
            (277, 3, 1),                 // samples per pixel
            (278, 3, 1),                 // rows per strip
            (279, 4, 4),                 // strip bytes
            (339, 3, u32::from(format)), // sample format
        ];
        tiff.extend_from_slice(&(tags.len() as u16).to_le_bytes());
        for (tag, kind, value) in tags {
            tiff.extend_from_slice(&tag.to_le_bytes());
            tiff.extend_from_slice(&kind.to_le_bytes());
            tiff.extend_from_slice(&1u32.to_le_bytes());
            tiff.extend_from_slice(&value.to_le_bytes());
        }
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next directory
        tiff.extend_from_slice(&0.5f32.to_le_bytes());
        let path = scratch_dir("tiff32").join(format!("{name}.tif"));
        std::fs::write(&path, &tiff).expect("write");
        let err = load_image(&path).unwrap_err();
        assert_names(
            &err,
            &path,
            "not a readable image: its samples are 32-bit grey",
        );
        assert_names(&err, &path, "save it with 8 or 16 bits per sample");
    }
}

#[test]
fn truncated_png_names_the_path() {
    let bytes = std::fs::read(image_path("catdog.png")).expect("fixture");
    let path = scratch_dir("cut").join("cut.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = load_image(&path).unwrap_err();
    assert_names(&err, &path, "not a readable image");
}

#[test]
fn grey_and_alpha_images_convert_like_pil() {
    let dir = scratch_dir("modes");
    let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 50 + y) as u8]));
    grey.save(dir.join("grey.png")).expect("save");
    let rgba = image::RgbaImage::from_fn(3, 2, |x, _| image::Rgba([x as u8, 2, 3, 0]));
    rgba.save(dir.join("rgba.png")).expect("save");

    let loaded = load_image(&dir.join("grey.png")).expect("grey");
    assert!(loaded
        .pixels()
        .zip(grey.pixels())
        .all(|(p, g)| p.0 == [g.0[0]; 3]));
    // Alpha is dropped, not composited, even when fully transparent.
    let loaded = load_image(&dir.join("rgba.png")).expect("rgba");
    assert!(loaded
        .pixels()
        .zip(rgba.pixels())
        .all(|(p, q)| p.0 == q.0[..3]));
}

#[test]
fn empty_image_is_an_error() {
    let err = ImageProcessorConfig::clip(48)
        .preprocess(&RgbImage::new(0, 5), "blank")
        .unwrap_err()
        .to_string();
    assert!(err.contains("blank") && err.contains("0×5"), "{err}");
}

/// A JPEG cut short is refused, as Pillow refuses it ("image file is truncated"), where the
/// decoder alone would fill the rest with grey; bytes after the end-of-image marker are
/// ignored, as decoders ignore them.
#[test]
fn truncated_jpeg_is_an_error_and_trailing_bytes_are_not() {
    let bytes = std::fs::read(image_path("coco_127510.jpg")).unwrap();
    let dir = scratch_dir("truncated-jpeg");
    let whole = load_image(&image_path("coco_127510.jpg")).unwrap();

    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    match load_image(&cut) {
        Err(InputError::ImageDecode { reason, .. }) => {
            assert!(reason.contains("truncated"), "{reason}")
        }
        other => panic!(
            "a truncated JPEG loaded: {:?}",
            other.map(|i| i.dimensions())
        ),
    }

    let padded = dir.join("padded.jpg");
    let mut more = bytes.clone();
    more.extend_from_slice(b"\0\0trailing bytes");
    std::fs::write(&padded, &more).unwrap();
    assert_eq!(load_image(&padded).unwrap(), whole);
}

/// EXIF orientation is read (for the warning) but not applied, as Pillow's `Image.open`
/// does not apply it: a sideways phone photo keeps its stored width and height.
#[test]
fn exif_orientation_is_reported_not_applied() {
    let dir = scratch_dir("exif-orientation");
    let sideways = jpeg_with_orientation(24, 16, 6);
    assert_eq!(exif_orientation(&sideways), Some(Orientation::Rotate90));
    let path = dir.join("sideways.jpg");
    std::fs::write(&path, &sideways).unwrap();
    assert_eq!(load_image(&path).unwrap().dimensions(), (24, 16));

    assert_eq!(exif_orientation(&jpeg_with_orientation(24, 16, 1)), None);
    assert_eq!(
        exif_orientation(&jpeg_with_orientation(24, 16, 3)),
        Some(Orientation::Rotate180)
    );
    let plain = std::fs::read(image_path("coco_127510.jpg")).unwrap();
    assert_eq!(exif_orientation(&plain), None);
    assert_eq!(exif_orientation(b"not an image"), None);
}
