//! CLIP image preprocessing, equal to transformers' `CLIPImageProcessor` (the "slow", PIL-based
//! one; `models/clip/image_processing_clip.py`).
//!
//! The steps and the rounding of each follow transformers and Pillow exactly:
//! 1. decode and `convert("RGB")` (alpha dropped, grey replicated);
//! 2. resize with Pillow's `Image.resize` (separable convolution, 8-bit fixed point,
//!    `libImaging/Resample.c`) to the size of `get_resize_output_image_size`;
//! 3. `center_crop` with transformers' offsets `(h − crop_h) // 2`, zero padding when the crop is
//!    larger than the image;
//! 4. `rescale`: `float32(float64(v) · rescale_factor)`;
//! 5. `normalize`: `(x − mean) / std` in float32; output is channels-first [3, H, W].
//!
//! Sizes come from preprocessor_config.json when the model directory has one, else from the
//! model config's `image_size` (spec/methods.md §H "Preprocessing sizes"); all other defaults are
//! `CLIPImageProcessor`'s.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde_json::{Map, Value};

use super::InputError;
use crate::warning::warn;

/// Name of the image processor configuration inside a model directory.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";

/// The largest side (in pixels) a preprocessor_config.json may resize or crop to. Real
/// checkpoints use 224 to 640; a size in the hundreds of thousands is a typo that would have
/// each image resized into gigabytes (and ViLT's patch sequence grow to match) before anything
/// else could fail, so it is refused when the model opens.
pub const MAX_SIDE: usize = 4096;

/// The most bytes an RGB image may take decoded, or resized: the image crate's limit on
/// decoding (512 MiB).
pub(crate) fn max_decoded_bytes() -> u64 {
    image::Limits::default().max_alloc.unwrap_or(u64::MAX)
}

/// Refuses an image without pixels (a side of 0).
pub(crate) fn check_pixels(what: &str, (width, height): (u32, u32)) -> Result<(), InputError> {
    if width == 0 || height == 0 {
        return Err(InputError::EmptyImage {
            what: what.to_string(),
            width,
            height,
        });
    }
    Ok(())
}

/// Refuses a resize to nothing, or to more than [`max_decoded_bytes`]: an extreme aspect
/// ratio brought to a shortest edge (100000×1 pixels to 224 high is 22.4M wide) would take
/// gigabytes and minutes before the center crop kept 224×224 of it.
pub(crate) fn check_resize(
    what: &str,
    (width, height): (u32, u32),
    (out_width, out_height): (usize, usize),
) -> Result<(), InputError> {
    if out_width == 0 || out_height == 0 {
        return Err(InputError::ResizedToNothing {
            what: what.to_string(),
            width,
            height,
            out_width,
            out_height,
        });
    }
    if (out_width as u64).saturating_mul(out_height as u64 * 3) > max_decoded_bytes() {
        return Err(InputError::ResizedTooLarge {
            what: what.to_string(),
            width,
            height,
            out_width,
            out_height,
        });
    }
    Ok(())
}

/// OpenAI CLIP's per-channel mean (transformers' `OPENAI_CLIP_MEAN`).
// Both constants keep transformers' decimal digits; they round to f32 as numpy's float32 does.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation (`OPENAI_CLIP_STD`).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Pillow's resampling filters that `Image.resize` implements by convolution, by their PIL codes
/// (`PIL.Image.Resampling`), which is how preprocessor_config.json stores `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// 1
    Lanczos,
    /// 2
    Bilinear,
    /// 3, CLIP's choice
    Bicubic,
    /// 4
    Box,
    /// 5
    Hamming,
}

impl Resample {
    /// The filter for a PIL resample code; NEAREST (0) takes another code path in Pillow and is
    /// not supported.
    pub fn from_pil_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            4 => Some(Self::Box),
            5 => Some(Self::Hamming),
            _ => None,
        }
    }

    /// Half-width of the kernel at scale 1 (Pillow's `struct filter` support).
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    /// The kernel, as Pillow's `*_filter` functions compute it (in double precision).
    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes these constants as C floats.
                    x.sin() / x * (0.54_f32 as f64 + 0.46_f32 as f64 * x.cos())
                }
            }
            Self::Bicubic => {
                // Keys' cubic convolution with a = −0.5.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// The resize target, as `size` in preprocessor_config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// `{"shortest_edge": n}` (or a legacy plain integer): keep the aspect ratio.
    ShortestEdge(usize),
    /// `{"height": h, "width": w}`.
    Exact { height: usize, width: usize },
}

/// The settings of `CLIPImageProcessor` that change pixels.
///
/// `do_convert_rgb` is not a setting here: images are always converted to RGB, which is what the
/// flag does to every image a 3-channel model can take.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub do_resize: bool,
    pub size: ResizeTo,
    pub resample: Resample,
    pub do_center_crop: bool,
    pub crop_height: usize,
    pub crop_width: usize,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// One preprocessed image: channels-first f32, [3, height, width].
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// Several preprocessed images of one size: [batch, 3, height, width].
#[derive(Debug, Clone, PartialEq)]
pub struct PixelBatch {
    pub data: Vec<f32>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageProcessorConfig {
    /// `CLIPImageProcessor`'s defaults with its 224 replaced by the model's `image_size`.
    pub fn clip(image_size: usize) -> Self {
        Self {
            do_resize: true,
            size: ResizeTo::ShortestEdge(image_size),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_height: image_size,
            crop_width: image_size,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }

    /// `dir/preprocessor_config.json` when it exists, else [`ImageProcessorConfig::clip`].
    pub fn from_dir(dir: &Path, image_size: usize) -> Result<Self, InputError> {
        let path = dir.join(PREPROCESSOR_CONFIG_FILE);
        if path.is_file() {
            Self::from_file(&path, image_size)
        } else {
            Ok(Self::clip(image_size))
        }
    }

    /// Refuses a preprocessing whose output is not the `size`×`size` image a CLIP vision
    /// tower's position embeddings are for (a preprocessor_config.json from another model):
    /// otherwise the mismatch surfaces only as a wrong-length pixel buffer.
    pub fn check_square_output(&self, dir: &Path, size: usize) -> Result<(), InputError> {
        let (field, output) = if self.do_center_crop {
            ("crop_size", (self.crop_height, self.crop_width))
        } else {
            match (self.do_resize, self.size) {
                (true, ResizeTo::Exact { height, width }) => ("size", (height, width)),
                _ => return Ok(()),
            }
        };
        if output == (size, size) {
            return Ok(());
        }
        Err(InputError::ConfigField {
            path: dir.join(PREPROCESSOR_CONFIG_FILE),
            field: field.into(),
            expected: format!(
                "{size}×{size}, the image_size of config.json's vision_config (the two files \
                 do not belong together)"
            ),
            found: format!("{}×{}", output.0, output.1),
        })
    }

    /// Parses a preprocessor_config.json; absent fields take [`ImageProcessorConfig::clip`]'s
    /// values.
    pub fn from_file(path: &Path, image_size: usize) -> Result<Self, InputError> {
        let json = read_json_object(path)?;
        let fields = Fields { path, json: &json };
        let default = Self::clip(image_size);
        let (crop_height, crop_width) = match fields.get("crop_size") {
            None => (default.crop_height, default.crop_width),
            // `get_size_dict(crop_size, default_to_square=True)`: an integer is a square.
            Some(Value::Number(_)) => {
                let n = fields.positive("crop_size")?;
                (n, n)
            }
            Some(_) => match fields.size_dict("crop_size")? {
                ResizeTo::Exact { height, width } => (height, width),
                ResizeTo::ShortestEdge(_) => {
                    return Err(fields.error("crop_size", "{\"height\", \"width\"}"));
                }
            },
        };
        let config = Self {
            do_resize: fields.flag("do_resize", default.do_resize)?,
            size: match fields.get("size") {
                None => default.size,
                // `get_size_dict(size, default_to_square=False)`: an integer is the shortest edge.
                Some(Value::Number(_)) => ResizeTo::ShortestEdge(fields.positive("size")?),
                Some(_) => fields.size_dict("size")?,
            },
            resample: fields.resample(default.resample)?,
            do_center_crop: fields.flag("do_center_crop", default.do_center_crop)?,
            crop_height,
            crop_width,
            do_rescale: fields.flag("do_rescale", default.do_rescale)?,
            rescale_factor: match fields.get("rescale_factor") {
                None => default.rescale_factor,
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| fields.error("rescale_factor", "a finite number"))?,
            },
            do_normalize: fields.flag("do_normalize", default.do_normalize)?,
            image_mean: fields.per_channel("image_mean", default.image_mean, false)?,
            image_std: fields.per_channel("image_std", default.image_std, true)?,
        };
        fields.check_finite_pixels(
            config.do_rescale.then_some(config.rescale_factor),
            config
                .do_normalize
                .then_some((config.image_mean, config.image_std)),
        )?;
        Ok(config)
    }

    /// Loads and preprocesses the image file at `path`.
    pub fn preprocess_file(&self, path: &Path) -> Result<PixelValues, InputError> {
        let image = load_image(path)?;
        self.preprocess(&image, &path.display().to_string())
    }

    /// That an image of `(width, height)` pixels preprocesses: it has pixels, and does not
    /// resize to nothing or to too much. `what` names it in errors.
    pub fn check_size(&self, what: &str, (width, height): (u32, u32)) -> Result<(), InputError> {
        check_pixels(what, (width, height))?;
        if self.do_resize {
            let (h, w) = resize_output_size(height as usize, width as usize, self.size);
            check_resize(what, (width, height), (w, h))?;
        }
        Ok(())
    }

    /// Preprocesses an RGB image; `what` names it in errors.
    pub fn preprocess(&self, image: &RgbImage, what: &str) -> Result<PixelValues, InputError> {
        self.check_size(what, image.dimensions())?;
        let resized;
        let image = if self.do_resize {
            let (height, width) =
                resize_output_size(image.height() as usize, image.width() as usize, self.size);
            resized = resize(image, width, height, self.resample);
            &resized
        } else {
            image
        };
        let cropped;
        let image = if self.do_center_crop {
            cropped = center_crop(image, self.crop_height, self.crop_width);
            &cropped
        } else {
            image
        };
        Ok(self.to_tensor(image))
    }

    /// Preprocesses several image files into one batch; they must end up the same size.
    pub fn preprocess_batch<P: AsRef<Path>>(&self, paths: &[P]) -> Result<PixelBatch, InputError> {
        let mut data = Vec::new();
        let mut first: Option<(String, (usize, usize))> = None;
        for path in paths {
            let path = path.as_ref();
            let pixels = self.preprocess_file(path)?;
            let size = (pixels.height, pixels.width);
            match &first {
                None => first = Some((path.display().to_string(), size)),
                Some((name, first_size)) if *first_size != size => {
                    return Err(InputError::RaggedBatch {
                        first: name.clone(),
                        first_size: *first_size,
                        other: path.display().to_string(),
                        other_size: size,
                    });
                }
                Some(_) => {}
            }
            data.extend_from_slice(&pixels.data);
        }
        let (height, width) = first.map_or((0, 0), |(_, size)| size);
        Ok(PixelBatch {
            data,
            batch: paths.len(),
            height,
            width,
        })
    }

    /// Rescale and normalise with transformers' precision, into channels-first order.
    fn to_tensor(&self, image: &RgbImage) -> PixelValues {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let mut data = vec![0.0f32; 3 * height * width];
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                let v = pixel.0[c];
                // `rescale` multiplies in float64 and then casts to float32.
                let mut x = if self.do_rescale {
                    (f64::from(v) * self.rescale_factor) as f32
                } else {
                    f32::from(v)
                };
                if self.do_normalize {
                    x = (x - self.image_mean[c]) / self.image_std[c];
                }
                data[c * height * width + i] = x;
            }
        }
        PixelValues {
            data,
            height,
            width,
        }
    }
}

/// Reads a preprocessor_config.json that must hold one JSON object.
pub(crate) fn read_json_object(path: &Path) -> Result<Map<String, Value>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(json)) => Ok(json),
        Ok(other) => Err(field_error(path, "(top level)", "a JSON object", &other)),
        Err(source) => Err(InputError::ConfigJson {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The checks [`load_image`] makes before decoding, and the image's (width, height) from its
/// header: that the file exists, can be read, holds a format fiedler reads, is not a JPEG
/// cut short, and has a header that gives its size. Sessions make them for every request
/// before the first batch (and check that size against the model's resize), so that a bad
/// file stops a long call at once rather than at its batch. Only data that fails to decode
/// past a sound header is left to the decoding.
pub fn check_image_file(path: &Path) -> Result<(u32, u32), InputError> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let reader = complete(path, &bytes)?;
    reader
        .into_dimensions()
        .map_err(|e| InputError::ImageDecode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// A reader of the whole file `bytes`: [`recognised`], and refused if it is a JPEG cut short.
fn complete<'a>(path: &Path, bytes: &'a [u8]) -> Result<ImageReader<Cursor<&'a [u8]>>, InputError> {
    let reader = recognised(path, bytes)?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(InputError::ImageDecode {
            path: path.to_path_buf(),
            reason: "the JPEG data ends before its end-of-image marker (a truncated file?)".into(),
        });
    }
    Ok(reader)
}

fn read_error(path: &Path, source: std::io::Error) -> InputError {
    let path = path.to_path_buf();
    if source.kind() == std::io::ErrorKind::NotFound {
        InputError::ImageNotFound { path }
    } else {
        InputError::ImageRead { path, source }
    }
}

/// A reader of `bytes` (the file, or its first bytes), refused when they are empty or in no
/// format fiedler reads (the guesser also knows formats fiedler is built without: PNM, QOI,
/// ICO, …).
fn recognised<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<ImageReader<Cursor<&'a [u8]>>, InputError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| read_error(path, e))?;
    let reason = if bytes.is_empty() {
        "the file is empty"
    } else if !reader.format().is_some_and(|f| f.reading_enabled()) {
        "its content is none of the formats fiedler reads (PNG, JPEG, WebP, BMP, TIFF, GIF)"
    } else {
        return Ok(reader);
    };
    Err(InputError::ImageDecode {
        path: path.to_path_buf(),
        reason: reason.into(),
    })
}

/// Typed access to preprocessor_config.json fields, with messages naming the file and field.
pub(crate) struct Fields<'a> {
    pub(crate) path: &'a Path,
    pub(crate) json: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// JSON null counts as absent, as transformers treats `None`.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn error(&self, key: &str, expected: &str) -> InputError {
        let found = self.json.get(key).unwrap_or(&Value::Null);
        field_error(self.path, key, expected, found)
    }

    pub(crate) fn flag(&self, key: &str, default: bool) -> Result<bool, InputError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.error(key, "true or false")),
        }
    }

    /// `resample`: a PIL filter code.
    pub(crate) fn resample(&self, default: Resample) -> Result<Resample, InputError> {
        const KEY: &str = "resample";
        match self.get(KEY) {
            None => Ok(default),
            Some(v) => v.as_u64().and_then(Resample::from_pil_code).ok_or_else(|| {
                self.error(
                    KEY,
                    "a PIL filter code: 1 (lanczos), 2 (bilinear), 3 (bicubic), 4 (box) or 5 \
                     (hamming)",
                )
            }),
        }
    }

    /// A size in pixels (or a size divisor): a positive integer up to [`MAX_SIDE`].
    pub(crate) fn positive(&self, key: &str) -> Result<usize, InputError> {
        self.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0 && n <= MAX_SIDE)
            .ok_or_else(|| {
                self.error(
                    key,
                    &format!("a positive integer of at most {MAX_SIDE} (pixels)"),
                )
            })
    }

    /// A size object: `{"shortest_edge": n}` or `{"height": h, "width": w}`.
    pub(crate) fn size_dict(&self, key: &str) -> Result<ResizeTo, InputError> {
        let expected = format!(
            "an integer, {{\"shortest_edge\": n}} or {{\"height\": h, \"width\": w}} with \
             positive sizes of at most {MAX_SIDE} pixels"
        );
        let obj = self
            .get(key)
            .and_then(Value::as_object)
            .ok_or_else(|| self.error(key, &expected))?;
        let dim = |name: &str| {
            obj.get(name)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0 && n <= MAX_SIDE)
        };
        if obj.contains_key("shortest_edge") {
            dim("shortest_edge")
                .map(ResizeTo::ShortestEdge)
                .ok_or_else(|| self.error(key, &expected))
        } else {
            match (dim("height"), dim("width")) {
                (Some(height), Some(width)) => Ok(ResizeTo::Exact { height, width }),
                _ => Err(self.error(key, &expected)),
            }
        }
    }

    /// Refuses a rescale factor, mean or std under which some pixel value (0 to 255) leaves
    /// the f32 range, e.g. an `image_std` of 1e-45: every image would then reach the model
    /// as infinities. `rescale` and `normalize` are the settings in use (None when off).
    pub(crate) fn check_finite_pixels(
        &self,
        rescale: Option<f64>,
        normalize: Option<([f32; 3], [f32; 3])>,
    ) -> Result<(), InputError> {
        for c in 0..3 {
            for v in [0u8, 255] {
                let x = match rescale {
                    Some(factor) => (f64::from(v) * factor) as f32,
                    None => f32::from(v),
                };
                let key = if !x.is_finite() {
                    "rescale_factor"
                } else {
                    match normalize {
                        Some((mean, std)) if !((x - mean[c]) / std[c]).is_finite() => "image_std",
                        _ => continue,
                    }
                };
                return Err(self.error(
                    key,
                    &format!(
                        "values that keep every pixel finite (pixel value {v} of channel {c} \
                         becomes infinite)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Three per-channel values, or one number for all channels (as `normalize` accepts).
    pub(crate) fn per_channel(
        &self,
        key: &str,
        default: [f32; 3],
        nonzero: bool,
    ) -> Result<[f32; 3], InputError> {
        let expected = if nonzero {
            "three non-zero numbers (or one)"
        } else {
            "three numbers (or one)"
        };
        let values: Option<Vec<f64>> = match self.get(key) {
            None => return Ok(default),
            Some(Value::Number(n)) => n.as_f64().map(|x| vec![x; 3]),
            Some(Value::Array(items)) => items.iter().map(Value::as_f64).collect(),
            Some(_) => None,
        };
        // transformers builds the mean/std arrays in float32, as here.
        match values.as_deref() {
            Some(&[a, b, c])
                if [a, b, c]
                    .iter()
                    .all(|x| x.is_finite() && (!nonzero || *x != 0.0)) =>
            {
                Ok([a as f32, b as f32, c as f32])
            }
            _ => Err(self.error(key, expected)),
        }
    }
}

fn field_error(path: &Path, field: &str, expected: &str, found: &Value) -> InputError {
    InputError::ConfigField {
        path: path.to_path_buf(),
        field: field.to_string(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// Decodes an image file (PNG, JPEG, WebP, BMP, TIFF or GIF's first frame; the format from its
/// content, not its extension) and converts it to RGB like Pillow's
/// `Image.open(path).convert("RGB")`.
///
/// A GIF's first frame is placed on its logical screen as Pillow places it (see
/// `gif_frame`), animated or not.
///
/// Alpha is dropped without compositing and grey is replicated, as Pillow does. 16-bit samples
/// keep their high byte, which is how Pillow unpacks 16-bit RGB(A) PNGs (16-bit grey, which
/// Pillow opens as mode "I;16" and then clips at 255, is scaled the same way instead). EXIF
/// orientation is not applied, as `Image.open` does not apply it (the first image of a run
/// that has one gets a warning). A JPEG cut short is an
/// error, as in Pillow ("image file is truncated"): the decoder would fill the missing rows
/// with grey and say nothing.
pub fn load_image(path: &Path) -> Result<RgbImage, InputError> {
    let (image, orientation) = decode_image(path)?;
    if let Some(orientation) = orientation {
        warn_orientation_once(path, orientation);
    }
    Ok(image)
}

/// [`load_image`] without the warning: the image, and the EXIF orientation it was not turned
/// by (for callers that decode many at once, and warn of the first in their own order).
pub fn decode_image(path: &Path) -> Result<(RgbImage, Option<Orientation>), InputError> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let reader = complete(path, &bytes)?;
    let decode_error = |reason: String| InputError::ImageDecode {
        path: path.to_path_buf(),
        reason,
    };
    if reader.format() == Some(ImageFormat::Gif) {
        let frame = super::gif_frame::first_frame(&bytes).map_err(decode_error)?;
        return Ok((frame, None));
    }
    let tiff = reader.format() == Some(ImageFormat::Tiff);
    let decoded = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => decode_error(too_large(&bytes)),
        // The decoder's own words name a sample layout ("color type `Unknown(32)`", "sample
        // format 2 for 32 bits"), not what to do about it.
        image::ImageError::Unsupported(e) if tiff && is_32_bit_grey(&e.to_string()) => {
            decode_error(format!(
                "its samples are 32-bit grey, integer or floating point (Pillow's modes I and \
                 F), which fiedler does not read ({e}); save it with 8 or 16 bits per sample"
            ))
        }
        e => decode_error(e.to_string()),
    })?;
    Ok((to_rgb(decoded), exif_orientation(&bytes)))
}

/// Whether the TIFF decoder's refusal is of 32-bit grey samples (its words for them).
fn is_32_bit_grey(refusal: &str) -> bool {
    refusal.contains("Unknown(32)") || refusal.contains("for 32 bits")
}

/// Why an image the decoder refused for its memory limit is too large: its size, when the
/// header gives it.
fn too_large(bytes: &[u8]) -> String {
    let dimensions = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    match dimensions {
        Some((w, h)) => format!(
            "it is {w}×{h} pixels, more than the decoder's memory limit allows ({} MiB decoded); scale it down first",
            max_decoded_bytes() >> 20
        ),
        None => format!(
            "it is larger than the decoder's memory limit allows ({} MiB decoded); scale it down first",
            max_decoded_bytes() >> 20
        ),
    }
}

/// The EXIF orientation that viewers apply when they show the image, unless it is the
/// identity (or the file has none, or its format carries none that the decoder reads).
pub fn exif_orientation(bytes: &[u8]) -> Option<Orientation> {
    let mut decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_decoder()
        .ok()?;
    decoder
        .orientation()
        .ok()
        .filter(|&o| o != Orientation::NoTransforms)
}

/// A photo straight from a phone is often stored sideways with an EXIF orientation: the model
/// sees it sideways, as in the reference, and a user looking at it upright in a viewer would
/// not guess why the maps look turned. Said once per run (for the first `path` it is called
/// with), so that a dataset of such photos does not bury the progress.
pub fn warn_orientation_once(path: &Path, orientation: Orientation) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let shown = match orientation {
        Orientation::NoTransforms => return,
        Orientation::Rotate90 => "rotate it 90° clockwise",
        Orientation::Rotate180 => "rotate it 180°",
        Orientation::Rotate270 => "rotate it 90° counter-clockwise",
        Orientation::FlipHorizontal => "mirror it left to right",
        Orientation::FlipVertical => "flip it upside down",
        Orientation::Rotate90FlipH => "rotate it 90° clockwise and mirror it",
        Orientation::Rotate270FlipH => "rotate it 90° counter-clockwise and mirror it",
    };
    WARNED.call_once(|| {
        warn(&format!(
            "{}: its EXIF orientation tells viewers to {shown}; fiedler, like Pillow's \
             Image.open in the reference, uses the pixels as stored, so the model sees it and \
             the maps are drawn that way. To explain it as viewers show it, rotate the file \
             itself first (e.g. `magick mogrify -auto-orient`). (Said for the first such \
             image only.)",
            path.display()
        ));
    });
}

/// Whether the end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA).
/// Inside scan data a byte FF is followed by 00 or a restart marker, so neither pair occurs
/// there; an EXIF thumbnail's own markers come before the main image's scans, and bytes after
/// the end marker are ignored, as decoders ignore them.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let marker = |m: u8| move |w: &[u8]| w == [0xFF, m];
    match bytes.windows(2).rposition(marker(0xDA)) {
        Some(scan) => bytes[scan..].windows(2).any(marker(0xD9)),
        None => false,
    }
}

fn to_rgb(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let wide = image.to_rgb16();
            let bytes = wide.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            RgbImage::from_raw(wide.width(), wide.height(), bytes)
                .expect("one byte per 16-bit sample keeps the buffer size")
        }
        other => other.to_rgb8(),
    }
}

/// transformers' `get_resize_output_image_size` (with `default_to_square=False` for a shortest
/// edge): returns (height, width). The long edge is `int(size * long / short)`, truncated.
pub fn resize_output_size(height: usize, width: usize, target: ResizeTo) -> (usize, usize) {
    match target {
        ResizeTo::Exact { height, width } => (height, width),
        ResizeTo::ShortestEdge(size) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // Python: the integer product, then true division, then int() truncation.
            let new_long = ((size * long) as f64 / short as f64) as usize;
            if width <= height {
                (new_long, size)
            } else {
                (size, new_long)
            }
        }
    }
}

/// Pillow's `Image.resize((width, height), filter)` of an RGB image.
///
/// Two separable passes over 8-bit data (each clipped to u8), each skipped when its dimension
/// does not change, with the kernel stretched by the downscale factor (antialiasing) and
/// fixed-point coefficients as in Pillow's `Resample.c`. The pass order matters (each pass
/// rounds): Pillow ≥ 11 runs the vertical pass first when the image shrinks at least twice as
/// much in height as in width, and horizontal first otherwise.
pub fn resize(image: &RgbImage, width: usize, height: usize, filter: Resample) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let shrink_h = in_h as i64 - height as i64;
    let shrink_w = in_w as i64 - width as i64;
    let vertical_first = shrink_h > 0 && shrink_h > 2 * shrink_w;
    let vertical = Coefficients::new(in_h, height, filter);
    let horizontal = Coefficients::new(in_w, width, filter);
    let mut pixels = std::borrow::Cow::Borrowed(image.as_raw().as_slice());
    if vertical_first {
        pixels = vertical_pass(&pixels, in_w, 0, &vertical).into();
        if width != in_w {
            pixels = horizontal_pass(&pixels, in_w, 0, height, &horizontal).into();
        }
    } else {
        let mut first_row = 0;
        if width != in_w {
            // Only the rows that the vertical pass reads, as Pillow does.
            first_row = if height != in_h {
                vertical.bounds[0].0
            } else {
                0
            };
            let rows = if height != in_h {
                let (last_start, last_len) = vertical.bounds[height - 1];
                last_start + last_len - first_row
            } else {
                in_h
            };
            pixels = horizontal_pass(&pixels, in_w, first_row, rows, &horizontal).into();
        }
        if height != in_h {
            pixels = vertical_pass(&pixels, width, first_row, &vertical).into();
        }
    }
    RgbImage::from_raw(width as u32, height as u32, pixels.into_owned())
        .expect("the passes produce width × height RGB pixels")
}

/// Pillow's `PRECISION_BITS`: coefficients are fixed point with 22 fractional bits.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output position, the first input index, the number of taps and their fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    /// `bounds.len()` rows of `stride` weights.
    weights: Vec<i32>,
    stride: usize,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the full box
    /// (0, in_size).
    fn new(in_size: usize, out_size: usize, filter: Resample) -> Self {
        // Pillow takes the box edges as C floats; sizes below 2^24 convert exactly.
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ss = 1.0 / filterscale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * stride];
        let mut taps = Vec::with_capacity(stride);
        for (xx, row) in weights.chunks_exact_mut(stride).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            taps.clear();
            taps.extend(
                (xmin..xmin + count).map(|x| filter.weight((x as f64 - center + 0.5) * ss)),
            );
            let total: f64 = taps.iter().sum();
            for (w, &tap) in row.iter_mut().zip(&taps) {
                let k = if total != 0.0 { tap / total } else { tap };
                let fixed = k * f64::from(1u32 << PRECISION_BITS);
                *w = if k < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, count));
        }
        Self {
            bounds,
            weights,
            stride,
        }
    }

    fn taps(&self, out: usize) -> (usize, &[i32]) {
        let (start, count) = self.bounds[out];
        (start, &self.weights[out * self.stride..][..count])
    }
}

/// Pillow's rounding: start at one half, then `clip8` of the integer part.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Resamples rows `first_row .. first_row + rows` of an interleaved RGB image along x.
fn horizontal_pass(
    src: &[u8],
    in_w: usize,
    first_row: usize,
    rows: usize,
    coeffs: &Coefficients,
) -> Vec<u8> {
    let out_w = coeffs.bounds.len();
    let mut out = Vec::with_capacity(rows * out_w * 3);
    for y in first_row..first_row + rows {
        let line = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for xx in 0..out_w {
            let (start, k) = coeffs.taps(xx);
            let mut acc = [HALF; 3];
            for (i, &w) in k.iter().enumerate() {
                let p = &line[(start + i) * 3..][..3];
                for c in 0..3 {
                    acc[c] += i64::from(p[c]) * i64::from(w);
                }
            }
            out.extend(acc.map(clip8));
        }
    }
    out
}

/// Resamples an interleaved RGB image of width `w` along y; input row 0 is source row
/// `first_row`.
fn vertical_pass(src: &[u8], w: usize, first_row: usize, coeffs: &Coefficients) -> Vec<u8> {
    let out_h = coeffs.bounds.len();
    let mut out = Vec::with_capacity(out_h * w * 3);
    let mut acc = vec![0i64; w * 3];
    for yy in 0..out_h {
        let (start, k) = coeffs.taps(yy);
        acc.fill(HALF);
        for (i, &weight) in k.iter().enumerate() {
            let row = start + i - first_row;
            let line = &src[row * w * 3..(row + 1) * w * 3];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i64::from(p) * i64::from(weight);
            }
        }
        out.extend(acc.iter().map(|&a| clip8(a)));
    }
    out
}

/// transformers' `center_crop`: top = (h − crop_h) // 2 (floor division), left likewise; where
/// the crop is larger than the image the outside is zero, as its padding branch gives.
pub fn center_crop(image: &RgbImage, crop_height: usize, crop_width: usize) -> RgbImage {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let top = (h - crop_height as i64).div_euclid(2);
    let left = (w - crop_width as i64).div_euclid(2);
    RgbImage::from_fn(crop_width as u32, crop_height as u32, |x, y| {
        let (sx, sy) = (i64::from(x) + left, i64::from(y) + top);
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}
