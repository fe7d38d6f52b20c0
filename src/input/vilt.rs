//! ViLT image preprocessing, equal to transformers' `ViltImageProcessor`
//! (`models/vilt/image_processing_vilt.py`, the PIL-based one).
//!
//! Per image, with the rounding of each step as transformers and Pillow do it:
//! 1. decode and convert to RGB ([`load_image`]; `ViltImageProcessor` itself converts nothing and
//!    fails on grey or RGBA input, which is converted here as CLIP's path converts it);
//! 2. resize with Pillow's `Image.resize` ([`resize`]) to [`resize_output_size`]: the shortest
//!    edge to `size.shortest_edge`, the long edge capped at `int(1333 / 800 · shortest_edge)`,
//!    both rounded half up and floored to a multiple of `size_divisor`;
//! 3. `rescale`: `float32(float64(v) · rescale_factor)`;
//! 4. `normalize`: `(x − mean) / std` in float32, channels-first [3, h, w].
//!
//! A batch is then padded with 0.0 (after normalisation) at the bottom and right to the largest
//! height and the largest width in the batch, taken separately, and `pixel_mask` marks the real
//! pixels (`pad` / `make_pixel_mask`).
//!
//! There is no crop: images of different aspect ratios keep different sizes, and the model reads
//! each one's patch grid from the mask at each patch's top-left pixel (`Vilt::grids`), which
//! is transformers' reading wherever the padded batch is a whole number of patches. Resized
//! images always are once `size_divisor` is a multiple of the patch size
//! ([`ViltProcessorConfig::check_patch_size`]); without resizing, each image must be
//! ([`ViltProcessorConfig::check_whole_patches`]).

use std::path::Path;

use image::RgbImage;
use serde_json::Value;

use super::image::{
    check_pixels, check_resize, load_image, read_json_object, resize, Fields, ImageProcessorConfig,
    Resample, ResizeTo, PREPROCESSOR_CONFIG_FILE,
};
use super::InputError;
use crate::warning::warn;

/// transformers' `IMAGENET_STANDARD_MEAN` and `_STD`, `ViltImageProcessor`'s defaults.
pub const IMAGENET_STANDARD_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const IMAGENET_STANDARD_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// The settings of `ViltImageProcessor` that change pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ViltProcessorConfig {
    pub do_resize: bool,
    /// `size["shortest_edge"]` (a legacy integer `size` means the same).
    pub shortest_edge: usize,
    pub size_divisor: usize,
    pub resample: Resample,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Pad the batch to its largest height and width (else all images must have one size).
    pub do_pad: bool,
}

/// Preprocessed images, zero-padded to one size.
#[derive(Debug, Clone, PartialEq)]
pub struct ViltPixels {
    /// [batch, 3, height, width]
    pub data: Vec<f32>,
    /// [batch, height, width]; true on the pixels of the image, false on the padding.
    pub mask: Vec<bool>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Per sample, the (height, width) of the image before padding: its mask is the top-left
    /// rectangle of this size.
    pub sizes: Vec<(usize, usize)>,
}

impl ViltProcessorConfig {
    /// `ViltImageProcessor()`'s defaults (divisor 32, bicubic, mean and std 0.5, padding) with
    /// its shortest edge of 384 replaced by the model's `image_size` (fiedler's contract,
    /// spec §H: 384 is only the usual value).
    pub fn vilt(image_size: usize) -> Self {
        Self {
            do_resize: true,
            shortest_edge: image_size,
            size_divisor: 32,
            resample: Resample::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: IMAGENET_STANDARD_MEAN,
            image_std: IMAGENET_STANDARD_STD,
            do_pad: true,
        }
    }

    /// `dir/preprocessor_config.json` when it exists, else [`ViltProcessorConfig::vilt`], with
    /// a warning (`crate::warning`): the model may have been trained with other settings.
    pub fn from_dir(dir: &Path, image_size: usize) -> Result<Self, InputError> {
        let path = dir.join(PREPROCESSOR_CONFIG_FILE);
        if path.is_file() {
            Self::from_file(&path, image_size)
        } else {
            let config = Self::vilt(image_size);
            warn(&format!(
                "no {} in {}: images are preprocessed with ViltImageProcessor's defaults and \
                 the model's image_size (shortest edge {}, multiples of {})",
                PREPROCESSOR_CONFIG_FILE,
                dir.display(),
                config.shortest_edge,
                config.size_divisor
            ));
            Ok(config)
        }
    }

    /// Parses a preprocessor_config.json; absent (or null) fields take the values of
    /// [`ViltProcessorConfig::vilt`] for the model's `image_size`.
    pub fn from_file(path: &Path, image_size: usize) -> Result<Self, InputError> {
        let json = read_json_object(path)?;
        let fields = Fields { path, json: &json };
        let default = Self::vilt(image_size);
        let shortest_edge = match fields.get("size") {
            None => default.shortest_edge,
            // `get_size_dict(size, default_to_square=False)`: an integer is the shortest edge.
            Some(Value::Number(_)) => fields.positive("size")?,
            // `longest_edge` beside it is ignored, as `ViltImageProcessor.resize` ignores it.
            Some(_) => match fields.size_dict("size")? {
                ResizeTo::ShortestEdge(n) => n,
                ResizeTo::Exact { .. } => {
                    return Err(fields.error(
                        "size",
                        "an integer or {\"shortest_edge\": n} (ViLT keeps the aspect ratio)",
                    ))
                }
            },
        };
        // The legacy name of `do_pad`, which `ViltImageProcessor.__init__` lets override it.
        let do_pad = match fields.get("pad_and_return_pixel_mask") {
            Some(_) => fields.flag("pad_and_return_pixel_mask", default.do_pad)?,
            None => fields.flag("do_pad", default.do_pad)?,
        };
        let config = Self {
            do_resize: fields.flag("do_resize", default.do_resize)?,
            shortest_edge,
            size_divisor: match fields.get("size_divisor") {
                None => default.size_divisor,
                Some(_) => fields.positive("size_divisor")?,
            },
            resample: fields.resample(default.resample)?,
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
            do_pad,
        };
        // Sides are rounded down to multiples of size_divisor: one past the shortest edge
        // would round every image to nothing.
        if config.do_resize && config.size_divisor > config.shortest_edge {
            return Err(fields.error(
                "size_divisor",
                &format!(
                    "at most the shortest edge images are resized to ({})",
                    config.shortest_edge
                ),
            ));
        }
        fields.check_finite_pixels(
            config.do_rescale.then_some(config.rescale_factor),
            config
                .do_normalize
                .then_some((config.image_mean, config.image_std)),
        )?;
        Ok(config)
    }

    /// That an image of `(width, height)` pixels preprocesses: it has pixels, and does not
    /// resize to nothing or to too much. `what` names it in errors.
    pub fn check_size(&self, what: &str, (width, height): (u32, u32)) -> Result<(), InputError> {
        check_pixels(what, (width, height))?;
        if self.do_resize {
            let (h, w) = self.output_size(height as usize, width as usize);
            check_resize(what, (width, height), (w, h))?;
        }
        Ok(())
    }

    /// The (height, width) an image of `height` × `width` is resized to (before any padding).
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        if self.do_resize {
            resize_output_size(height, width, self.shortest_edge, self.size_divisor)
        } else {
            (height, width)
        }
    }

    /// That resized images are whole `patch` px patches, as ViLT reads them: `size_divisor`
    /// a multiple of config.json's `patch_size`. `dir` holds preprocessor_config.json.
    pub fn check_patch_size(&self, dir: &Path, patch: usize) -> Result<(), InputError> {
        if !self.do_resize || self.size_divisor.max(1).is_multiple_of(patch) {
            return Ok(());
        }
        Err(InputError::ConfigField {
            path: dir.join(PREPROCESSOR_CONFIG_FILE),
            field: "size_divisor".into(),
            expected: format!(
                "a multiple of {patch}, config.json's patch_size (ViLT reads whole patches)"
            ),
            found: self.size_divisor.to_string(),
        })
    }

    /// That `what`, preprocessed to `height` × `width`, is whole `patch` px patches: always
    /// once [`Self::check_patch_size`] passed, unless `do_resize` is off.
    pub fn check_whole_patches(
        &self,
        what: &str,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<(), InputError> {
        if height.is_multiple_of(patch) && width.is_multiple_of(patch) {
            return Ok(());
        }
        Err(InputError::PartialPatches {
            what: what.to_string(),
            height,
            width,
            patch,
        })
    }

    /// Loads and preprocesses one image file: channels-first [3, h, w] values, h, w.
    pub fn preprocess_file(&self, path: &Path) -> Result<(Vec<f32>, usize, usize), InputError> {
        let image = load_image(path)?;
        self.preprocess(&image, &path.display().to_string())
    }

    /// Preprocesses an RGB image (without padding); `what` names it in errors.
    pub fn preprocess(
        &self,
        image: &RgbImage,
        what: &str,
    ) -> Result<(Vec<f32>, usize, usize), InputError> {
        self.check_size(what, image.dimensions())?;
        let resized;
        let image = if self.do_resize {
            let (height, width) = self.output_size(image.height() as usize, image.width() as usize);
            resized = resize(image, width, height, self.resample);
            &resized
        } else {
            image
        };
        let pixels = self.rescale_and_normalize().preprocess(image, what)?;
        Ok((pixels.data, pixels.height, pixels.width))
    }

    /// Preprocesses image files into one batch, zero-padded to the largest height and width.
    ///
    /// With `do_pad` off, the images must preprocess to one size (transformers cannot stack them
    /// otherwise) and the mask is all true, as ViLT takes a missing `pixel_mask` to be.
    pub fn preprocess_batch<P: AsRef<Path>>(&self, paths: &[P]) -> Result<ViltPixels, InputError> {
        let mut images = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let (data, h, w) = self.preprocess_file(path)?;
            images.push((path.display().to_string(), data, (h, w)));
        }
        if !self.do_pad {
            if let Some((first, _, first_size)) = images.first() {
                if let Some((other, _, other_size)) =
                    images.iter().find(|(_, _, size)| size != first_size)
                {
                    return Err(InputError::RaggedBatch {
                        first: first.clone(),
                        first_size: *first_size,
                        other: other.clone(),
                        other_size: *other_size,
                    });
                }
            }
        }
        let images: Vec<(&[f32], usize, usize)> = images
            .iter()
            .map(|(_, data, (h, w))| (data.as_slice(), *h, *w))
            .collect();
        Ok(pad_batch(&images))
    }

    /// CLIP's rescale-and-normalise step with these settings (the arithmetic is the same
    /// `BaseImageProcessor.rescale` / `normalize`).
    fn rescale_and_normalize(&self) -> ImageProcessorConfig {
        ImageProcessorConfig {
            do_resize: false,
            do_center_crop: false,
            do_rescale: self.do_rescale,
            rescale_factor: self.rescale_factor,
            do_normalize: self.do_normalize,
            image_mean: self.image_mean,
            image_std: self.image_std,
            ..ImageProcessorConfig::clip(1)
        }
    }
}

/// Zero-pads preprocessed images ([3, h, w] each) to the largest height and width, with a
/// pixel mask of the real pixels.
pub fn pad_batch(images: &[(&[f32], usize, usize)]) -> ViltPixels {
    let height = images.iter().map(|&(_, h, _)| h).max().unwrap_or(0);
    let width = images.iter().map(|&(_, _, w)| w).max().unwrap_or(0);
    let batch = images.len();
    let mut data = vec![0.0f32; batch * 3 * height * width];
    let mut mask = vec![false; batch * height * width];
    let mut sizes = Vec::with_capacity(batch);
    for (b, &(values, h, w)) in images.iter().enumerate() {
        for c in 0..3 {
            for y in 0..h {
                let src = &values[(c * h + y) * w..][..w];
                data[((b * 3 + c) * height + y) * width..][..w].copy_from_slice(src);
            }
        }
        for y in 0..h {
            mask[(b * height + y) * width..][..w].fill(true);
        }
        sizes.push((h, w));
    }
    ViltPixels {
        data,
        mask,
        batch,
        height,
        width,
        sizes,
    }
}

/// transformers' `get_resize_output_image_size` of `image_processing_vilt.py`, with
/// `longer = int(1333 / 800 · shortest_edge)` as `ViltImageProcessor.resize` passes it: returns
/// (height, width), either of which may be 0 for extreme aspect ratios.
///
/// All in f64 in Python's order: `scale = shorter / min(h, w)`; the short side becomes `shorter`
/// (exactly) and the long side `scale · long`; when the larger exceeds `longer`, both are
/// multiplied by `longer / larger`; each is rounded with `int(x + 0.5)` and floored to a multiple
/// of `size_divisor`. A square image takes the `h ≥ w` branch.
pub fn resize_output_size(
    height: usize,
    width: usize,
    shortest_edge: usize,
    size_divisor: usize,
) -> (usize, usize) {
    let shorter = shortest_edge as f64;
    // Python: `int(1333 / 800 * shorter)`, the float product truncated.
    let longer = (1333.0 / 800.0 * shorter).trunc();
    let scale = shorter / height.min(width) as f64;
    let (mut new_h, mut new_w) = if height < width {
        (shorter, scale * width as f64)
    } else {
        (scale * height as f64, shorter)
    };
    let larger = new_h.max(new_w);
    if larger > longer {
        let cap = longer / larger;
        new_h *= cap;
        new_w *= cap;
    }
    // `int(x + 0.5)` of a positive float truncates; `as` saturates instead of overflowing.
    let round = |x: f64| (x + 0.5) as usize;
    let floor_to = |n: usize| n / size_divisor.max(1) * size_divisor.max(1);
    (floor_to(round(new_h)), floor_to(round(new_w)))
}

/// The (rows, cols) of patches ViLT reads of an image of `height` × `width` real pixels in a
/// padded batch of whole patches: `ceil(h / patch)` × `ceil(w / patch)`, the patches whose
/// top-left pixel is real (`Vilt::grids` reads them off the pixel mask). A zero `patch` gives
/// (0, 0).
pub fn patch_grid(height: usize, width: usize, patch: usize) -> (usize, usize) {
    if patch == 0 {
        return (0, 0);
    }
    (height.div_ceil(patch), width.div_ceil(patch))
}
