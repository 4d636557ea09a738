//! Tiles for photos too large to run in one piece: a grid of cores that partition the image,
//! each run with a margin (halo) as wide as the network's receptive field, so every core pixel
//! sees exactly what it would see in an untiled run; and the tile size that fits in memory.

use image::RgbImage;

/// A rectangle in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One tile: the `input` the network runs on and the `core` inside it that the tile owns (its
/// output pixels and its share of whole-image statistics). Both in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub input: Rect,
    pub core: Rect,
}

/// A grid of tiles over a `width`×`height` image whose cores are at most `core`×`core` pixels
/// and whose inputs reach `halo` pixels further on each side (clipped at the image). `align`
/// divides every core edge and the halo, so strided layers sample the same grid in each tile.
pub fn grid(width: u32, height: u32, core: u32, halo: u32, align: u32) -> Vec<Tile> {
    let align = align.max(1);
    let core = (core / align).max(1) * align;
    let halo = halo.div_ceil(align) * align;
    let starts = |size: u32| -> Vec<(u32, u32)> {
        // Even cores: n tiles of about size/n each, rounded to the alignment.
        let n = size.div_ceil(core).max(1);
        let mut edges: Vec<u32> = (0..=n)
            .map(|i| {
                let edge = (u64::from(size) * u64::from(i) / u64::from(n)) as u32;
                (edge / align * align).min(size)
            })
            .collect();
        if let Some(last) = edges.last_mut() {
            *last = size;
        }
        edges.dedup();
        edges.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
    };
    let columns = starts(width);
    let rows = starts(height);
    let mut tiles = Vec::with_capacity(columns.len() * rows.len());
    for &(y, h) in &rows {
        for &(x, w) in &columns {
            let x0 = x.saturating_sub(halo);
            let y0 = y.saturating_sub(halo);
            let x1 = (x + w + halo).min(width);
            let y1 = (y + h + halo).min(height);
            tiles.push(Tile {
                input: Rect {
                    x: x0,
                    y: y0,
                    width: x1 - x0,
                    height: y1 - y0,
                },
                core: Rect {
                    x,
                    y,
                    width: w,
                    height: h,
                },
            });
        }
    }
    tiles
}

/// `rect` of `image`, where rows and columns past the image's bottom and right edges are its
/// reflection there (as the network's own padding to a multiple of its stride extends it).
pub fn crop_reflected(image: &RgbImage, rect: Rect) -> RgbImage {
    let (w, h) = image.dimensions();
    let reflect = |v: u32, size: u32| -> u32 {
        if v < size {
            v
        } else {
            // v = size - 1 + i reflects to size - 1 - i; tiny images repeat the edge.
            (2 * (size - 1)).saturating_sub(v).min(size - 1)
        }
    };
    RgbImage::from_fn(rect.width, rect.height, |x, y| {
        *image.get_pixel(reflect(rect.x + x, w), reflect(rect.y + y, h))
    })
}

/// Copies the part of `tile_output` (the network's output for `tile.input`) inside the tile's
/// core into `out`, clipped to `out`'s size.
pub fn paste_core(out: &mut RgbImage, tile_output: &RgbImage, tile: Tile) {
    let (ow, oh) = out.dimensions();
    let dx = tile.core.x - tile.input.x;
    let dy = tile.core.y - tile.input.y;
    for y in 0..tile.core.height {
        let oy = tile.core.y + y;
        if oy >= oh {
            break;
        }
        for x in 0..tile.core.width {
            let ox = tile.core.x + x;
            if ox >= ow {
                break;
            }
            out.put_pixel(ox, oy, *tile_output.get_pixel(dx + x, dy + y));
        }
    }
}

/// About `pixels` worth of `tiles` (by core area), spread evenly over the list (row by row, so
/// over the image); all of them when they hold no more than that.
pub fn spread_sample(tiles: &[Tile], pixels: u64) -> Vec<Tile> {
    let area = |t: &Tile| u64::from(t.core.width) * u64::from(t.core.height);
    let total: u64 = tiles.iter().map(area).sum();
    if total <= pixels || tiles.is_empty() {
        return tiles.to_vec();
    }
    let mean = (total / tiles.len() as u64).max(1);
    let count = pixels.div_ceil(mean).clamp(1, tiles.len() as u64) as usize;
    // Midpoints of `count` equal runs of the list: a stride that, unlike a whole number of
    // rows, also spreads across the columns.
    (0..count)
        .map(|i| tiles[(2 * i + 1) * tiles.len() / (2 * count)])
        .collect()
}

/// Memory this process may use for one tile's activations: a quarter of what the system has
/// available now (so the photo, the result and the rest of the program fit beside it), between
/// 256 MB and 1 GB (larger tiles gain little: the halo is already a small share).
pub fn tile_budget_bytes() -> u64 {
    const FLOOR: u64 = 256 << 20;
    const CEILING: u64 = 1 << 30;
    let available = available_memory_bytes().unwrap_or(4 << 30);
    (available / 4).clamp(FLOOR, CEILING)
}

/// `MemAvailable` of /proc/meminfo (Linux); `None` elsewhere.
pub fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The longest tile side (a multiple of `align`) whose activations, at `bytes_per_pixel`, fit
/// in `budget` bytes.
pub fn tile_side_for(budget: u64, bytes_per_pixel: u64, align: u32) -> u32 {
    let pixels = budget / bytes_per_pixel.max(1);
    let side = (pixels as f64).sqrt() as u32;
    (side / align.max(1)) * align.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_sample_takes_about_the_pixels_asked_from_all_over() {
        let tiles = grid(1000, 1000, 100, 8, 4);
        assert_eq!(spread_sample(&tiles, 2_000_000).len(), tiles.len());
        let sample = spread_sample(&tiles, 250_000);
        assert_eq!(sample.len(), 25);
        let rows: std::collections::BTreeSet<u32> = sample.iter().map(|t| t.core.y).collect();
        let columns: std::collections::BTreeSet<u32> = sample.iter().map(|t| t.core.x).collect();
        assert!(
            rows.len() >= 8 && columns.len() >= 4,
            "{rows:?} {columns:?}"
        );
    }

    #[test]
    fn cores_partition_the_image_and_inputs_stay_inside() {
        for (w, h, core, halo) in [(100, 60, 32, 8), (64, 64, 64, 16), (1000, 12, 300, 64)] {
            let tiles = grid(w, h, core, halo, 4);
            let mut owner = vec![0u32; (w * h) as usize];
            for t in &tiles {
                assert!(t.input.x + t.input.width <= w && t.input.y + t.input.height <= h);
                assert!(t.core.x >= t.input.x && t.core.y >= t.input.y);
                assert_eq!(t.core.x % 4, 0);
                assert_eq!(t.input.x % 4, 0);
                for y in t.core.y..t.core.y + t.core.height {
                    for x in t.core.x..t.core.x + t.core.width {
                        owner[(y * w + x) as usize] += 1;
                    }
                }
                // The halo is there wherever the image is.
                assert_eq!(t.core.x - t.input.x, t.core.x.min(halo));
            }
            assert!(
                owner.iter().all(|&n| n == 1),
                "{w}x{h}: every pixel in one core"
            );
        }
    }

    #[test]
    fn crops_past_the_edge_reflect_like_the_network_padding() {
        let image = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let crop = crop_reflected(
            &image,
            Rect {
                x: 3,
                y: 0,
                width: 4,
                height: 4,
            },
        );
        let xs: Vec<u8> = (0..4).map(|x| crop.get_pixel(x, 0)[0]).collect();
        assert_eq!(xs, [3, 4, 3, 2]);
        let ys: Vec<u8> = (0..4).map(|y| crop.get_pixel(0, y)[1]).collect();
        assert_eq!(ys, [0, 1, 2, 1]);
    }

    #[test]
    fn tile_sides_follow_the_budget() {
        assert_eq!(tile_side_for(400 << 20, 400, 4), 1024);
        assert_eq!(tile_side_for(100 << 20, 400, 4), 512);
        assert!(tile_budget_bytes() >= 256 << 20);
    }
}
