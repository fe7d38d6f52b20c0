//! A GIF's first frame as Pillow reads it (`PIL/GifImagePlugin.py`, Pillow 13.0.0: `_open`,
//! `_seek(0)`, `load_prepare`), converted to RGB like `Image.open(path).convert("RGB")`.
//!
//! The image crate's GIF decoder crops frame 0 to the logical screen and fills the rest with
//! transparent black; Pillow composes it differently, so fiedler decodes the frame's indices with
//! the `gif` crate and composes them here:
//! - the image is the logical screen, grown to hold the frame where the frame runs past it;
//! - around the frame it holds the frame's transparent index if its Graphic Control Extension
//!   names one, else index 0, never the screen's background colour (Pillow uses that only to
//!   dispose of a frame before the next one);
//! - every index takes its colour from the frame's local colour table, else the global one,
//!   transparent ones too (`convert("RGB")` drops transparency); indices past the table read
//!   black;
//! - a table whose entry i is (i, i, i) for every i is no table to Pillow (mode "L"): index i
//!   reads as grey level i, past the table too;
//! - without any colour table, index i reads as grey level i too.
//!
//! Later frames of an animated GIF are not read: `Image.open` stands at frame 0.

use std::borrow::Cow;

use gif::{ColorOutput, DecodeOptions};
use image::RgbImage;

/// The first frame of the GIF in `bytes` on its canvas, in RGB; the error says why it cannot be
/// read.
pub(crate) fn first_frame(bytes: &[u8]) -> Result<RgbImage, String> {
    let mut options = DecodeOptions::new();
    options.set_color_output(ColorOutput::Indexed);
    let bytes = with_global_table(bytes);
    let mut decoder = options
        .read_info(bytes.as_ref())
        .map_err(|e| e.to_string())?;
    let screen = (usize::from(decoder.width()), usize::from(decoder.height()));
    let global_table = decoder.global_palette().map(<[u8]>::to_vec);
    let frame = decoder
        .read_next_frame()
        .map_err(|e| e.to_string())?
        .ok_or("it holds no image")?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let frame_width = usize::from(frame.width);
    let width = screen.0.max(left + frame_width);
    let height = screen.1.max(top + usize::from(frame.height));
    // The limit the image crate puts on every other format's decoded size.
    let max_bytes = super::image::max_decoded_bytes();
    if width as u64 * height as u64 * 3 > max_bytes {
        return Err(format!(
            "its first frame on its logical screen is {width}×{height} pixels, more than the \
             {} MiB fiedler decodes an image into",
            max_bytes >> 20
        ));
    }

    let mut canvas = vec![frame.transparent.unwrap_or(0); width * height];
    if frame_width > 0 {
        for (line, row) in frame
            .buffer
            .chunks(frame_width)
            .zip(canvas.chunks_exact_mut(width).skip(top))
        {
            row[left..left + line.len()].copy_from_slice(line);
        }
    }
    let table = frame.palette.as_deref().or(global_table.as_deref());
    let colours = colours(table.unwrap_or_default());
    let rgb = canvas
        .iter()
        .flat_map(|&index| colours[usize::from(index)])
        .collect();
    Ok(RgbImage::from_raw(width as u32, height as u32, rgb)
        .expect("three bytes for each pixel of the canvas"))
}

/// The file with the grey ramp as its global colour table if it has none: the `gif` crate refuses
/// a frame without any colour table, which Pillow reads as grey levels, as the ramp reads (a
/// local table still comes first).
fn with_global_table(bytes: &[u8]) -> Cow<'_, [u8]> {
    // The logical screen descriptor ends at byte 13; bit 7 of its byte 10 flags a global table,
    // bits 0-2 give its size (7: 256 entries).
    match bytes.get(10) {
        Some(&flags) if flags & 0x80 == 0 && bytes.len() >= 13 => {
            let mut patched = Vec::with_capacity(bytes.len() + 3 * 256);
            patched.extend_from_slice(&bytes[..10]);
            patched.push(flags | 0x87);
            patched.extend_from_slice(&bytes[11..13]);
            patched.extend((0..=255u8).flat_map(|level| [level; 3]));
            patched.extend_from_slice(&bytes[13..]);
            Cow::Owned(patched)
        }
        _ => Cow::Borrowed(bytes),
    }
}

/// The colour of each of the 256 indices under a GIF colour table (RGB triples), as Pillow
/// converts them (`GifImageFile._is_palette_needed` for the grey ramp).
fn colours(table: &[u8]) -> [[u8; 3]; 256] {
    let entries: Vec<[u8; 3]> = table.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    let grey_ramp = entries
        .iter()
        .enumerate()
        .all(|(i, entry)| entry.iter().all(|&v| usize::from(v) == i));
    std::array::from_fn(|i| {
        if grey_ramp {
            [i as u8; 3]
        } else {
            entries.get(i).copied().unwrap_or([0; 3])
        }
    })
}
