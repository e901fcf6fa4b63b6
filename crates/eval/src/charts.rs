//! PNG charts for the offline-evaluation reports: line charts (learning
//! curves, learned-vs-true position bias) and grouped bar charts (expert
//! utilisation per gate).
//!
//! Charts are drawn with `plotters` into an in-memory RGB buffer, encoded as
//! PNG with the `png` crate and written with
//! [`write_atomic`](watchnext_core::fsutil::write_atomic): a reader never sees
//! half a chart. Text goes through `ab_glyph` with a TrueType font read once
//! per process from the usual system locations ([`FONT_CANDIDATES`]: DejaVu
//! Sans, then Liberation Sans, then a few platform defaults); no font is
//! shipped with watchnext. Without one, the chart is still drawn, without any
//! text (no title, tick labels or legend), and the returned [`ChartNote`] says
//! so; `scripts/setup.sh` installs `fonts-dejavu-core` where it can.
//!
//! Bad data never fails a chart: non-finite points (and values beyond
//! ±1e300, which would overflow the axis arithmetic) are skipped, empty
//! series and empty charts are drawn as empty axes, and each such repair is
//! listed in the note. Only drawing, encoding and writing can fail, with a
//! [`ChartError`] naming the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width and height, in pixels, of every chart.
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);

/// Where a TrueType font is looked for, in order; the first that reads as a
/// font is used for every chart of the process.
pub const FONT_CANDIDATES: &[&str] = &[
    // DejaVu Sans: Debian/Ubuntu (fonts-dejavu-core), Fedora, Arch, Alpine, others.
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    // Liberation Sans: Debian/Ubuntu (fonts-liberation2, fonts-liberation), Fedora, Arch.
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans-fonts/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    // Platform defaults elsewhere.
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// The `plotters` font family our font is registered under.
const FONT_FAMILY: &str = "watchnext-sans";
/// A family that is never registered: charts drawn without text name it, so
/// any text drawn by mistake fails loudly instead of silently.
const NO_FONT_FAMILY: &str = "watchnext-no-font";

/// Values beyond this magnitude are skipped: axis spans and padding must stay
/// finite.
const MAX_ABS_VALUE: f64 = 1e300;

/// Series colours (Tableau 10), reused in order when there are more series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How a series' line is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineStyle {
    /// A solid line (a lone point is drawn as a marker).
    #[default]
    Solid,
    /// A dashed line, e.g. the true curve beside a learned one.
    Dashed,
    /// A solid line with a round marker on every point.
    Markers,
}

/// One named line of a [`line_chart`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend entry; an empty name leaves the series out of the legend.
    pub name: String,
    /// `(x, y)` points, drawn in the given order.
    pub points: Vec<(f64, f64)>,
    pub style: LineStyle,
    /// Palette slot; `None` takes the series' index. Series sharing a slot
    /// share a colour (e.g. the learned and true curves of one device).
    pub color: Option<usize>,
}

impl Series {
    /// A solid series in the colour of its index.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, style: LineStyle::Solid, color: None }
    }

    pub fn with_style(mut self, style: LineStyle) -> Self {
        self.style = style;
        self
    }

    pub fn with_color(mut self, slot: usize) -> Self {
        self.color = Some(slot);
        self
    }
}

/// What a written chart is missing or had repaired; empty when it is exactly
/// what was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct ChartNote {
    /// Whether text (title, tick labels, axis labels, legend) was drawn.
    pub text: bool,
    /// One line per problem: no font, skipped points, empty input.
    pub warnings: Vec<String>,
}

impl ChartNote {
    /// True when nothing was left out or repaired.
    pub fn is_clean(&self) -> bool {
        self.warnings.is_empty()
    }
}

impl fmt::Display for ChartNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.warnings.is_empty() { f.write_str("ok") } else { f.write_str(&self.warnings.join("; ")) }
    }
}

/// Why a chart was not written. Every variant names the chart's path.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot draw chart {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("cannot encode chart {path} as PNG: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },
    #[error("cannot write chart {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ChartError {
    /// The chart file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Draw { path, .. } | Self::Encode { path, .. } | Self::Write { path, .. } => path,
        }
    }
}

/// The system font charts use, if one was found (looked up once per process).
pub fn font_path() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| FONT_CANDIDATES.iter().map(Path::new).find(|path| try_register(path)).map(Path::to_path_buf))
        .as_deref()
}

/// Reads `path` and registers it as [`FONT_FAMILY`]. The bytes are leaked
/// (once per process): `ab_glyph` keeps a `&'static` reference to them.
fn try_register(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    // TrueType, OpenType (CFF), Apple `true` or a collection; anything else is not worth leaking.
    let magic = bytes.get(..4);
    if !matches!(magic, Some([0, 1, 0, 0] | b"OTTO" | b"true" | b"ttcf")) {
        return false;
    }
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
}

/// Draws `series` as lines on shared axes (x and y ranges fitted to the
/// finite points) and writes the chart as a PNG to `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<ChartNote, ChartError> {
    write_chart(path, TextMode::system(), |area, text, warnings| {
        draw_lines(area, text, title, x_label, y_label, series, warnings)
    })
}

/// Draws one group of bars per entry of `groups` (e.g. a task's gate), one
/// bar per value (e.g. an expert's mean weight), named by `bar_names` in the
/// legend, and writes the chart as a PNG to `path`. Bars start at zero;
/// non-finite values are left out.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
    bar_names: &[String],
) -> Result<ChartNote, ChartError> {
    write_chart(path, TextMode::system(), |area, text, warnings| {
        draw_bars(area, text, title, y_label, groups, bar_names, warnings)
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
/// The result of drawing (the backend's error type does not depend on its lifetime).
type Drawn = DrawResult<(), BitMapBackend<'static>>;

/// The text styles of one chart: a registered font, or none at all.
#[derive(Debug, Clone, Copy)]
struct TextMode {
    enabled: bool,
}

impl TextMode {
    fn system() -> Self {
        Self { enabled: font_path().is_some() }
    }

    fn style(self, size: f64) -> TextStyle<'static> {
        if self.enabled {
            (FONT_FAMILY, size).into_font().color(&BLACK)
        } else {
            // Transparent text is skipped before any font is looked up.
            (NO_FONT_FAMILY, size).into_font().color(&TRANSPARENT)
        }
    }
}

/// Renders with `draw` into an RGB buffer, encodes it and writes it atomically.
fn write_chart(
    path: &Path,
    text: TextMode,
    draw: impl FnOnce(&Area<'_>, TextMode, &mut Vec<String>) -> Drawn,
) -> Result<ChartNote, ChartError> {
    let (width, height) = DEFAULT_SIZE;
    let mut warnings = Vec::new();
    if !text.enabled {
        warnings.push(format!(
            "no TrueType font found (DejaVu Sans or Liberation Sans, e.g. {}): chart drawn without text",
            FONT_CANDIDATES[0]
        ));
    }
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let drawn = area.fill(&WHITE).and_then(|()| draw(&area, text, &mut warnings)).and_then(|()| area.present());
        drawn.map_err(|e| ChartError::Draw { path: path.to_path_buf(), message: e.to_string() })?;
    }
    let png =
        encode_png(&rgb, width, height).map_err(|source| ChartError::Encode { path: path.to_path_buf(), source })?;
    watchnext_core::fsutil::write_atomic(path, &png)
        .map_err(|source| ChartError::Write { path: path.to_path_buf(), source })?;
    Ok(ChartNote { text: text.enabled, warnings })
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_ABS_VALUE
}

/// `lo..hi` widened by `pad` of its span on each side, or around the value
/// when it is a single one, or `0..1` when there is none.
fn padded(lo: f64, hi: f64, pad: f64) -> Range<f64> {
    if lo > hi || lo.is_nan() || hi.is_nan() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let scale = lo.abs().max(hi.abs());
    if span <= f64::EPSILON * scale || span == 0.0 {
        let mid = lo + span / 2.0;
        let half = if mid.abs() > 1e-200 { mid.abs() * 0.1 } else { 1.0 };
        return mid - half..mid + half;
    }
    lo - span * pad..hi + span * pad
}

fn color_of(slot: usize) -> RGBColor {
    PALETTE[slot % PALETTE.len()]
}

/// Tick labels with as many decimals as the tick spacing of `range` needs,
/// trailing zeros trimmed; scientific notation for very large or small values.
fn tick_formatter(range: &Range<f64>) -> impl Fn(&f64) -> String + use<> {
    let step = (range.end - range.start) / 10.0;
    let magnitude = range.start.abs().max(range.end.abs());
    let scientific = !(1e-3..1e6).contains(&magnitude);
    let decimals = if scientific {
        (magnitude / step).log10().ceil().clamp(0.0, 6.0) as usize
    } else {
        (-step.log10().floor()).clamp(0.0, 9.0) as usize
    };
    move |&v: &f64| {
        if v == 0.0 || (!scientific && v.abs() < step * 1e-6) {
            return "0".to_owned();
        }
        if scientific {
            let text = format!("{v:.decimals$e}");
            let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
            format!("{}e{exponent}", trim_zeros(mantissa))
        } else {
            trim_zeros(&format!("{v:.decimals$}")).to_owned()
        }
    }
}

fn trim_zeros(number: &str) -> &str {
    if number.contains('.') { number.trim_end_matches('0').trim_end_matches('.') } else { number }
}

/// How a legend entry is marked.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Line(LineStyle),
    Bar,
}

/// Draws the title above and the legend to the right of `area`; returns
/// the area left for the plot. Both need text, so without a font there is
/// neither.
fn frame<'a>(
    area: &Area<'a>,
    text: TextMode,
    title: &str,
    legend: &[(String, RGBColor, Mark)],
    warnings: &mut Vec<String>,
) -> DrawResult<Area<'a>, BitMapBackend<'a>> {
    if !text.enabled {
        return Ok(area.clone());
    }
    let area = if title.is_empty() { area.clone() } else { area.titled(title, text.style(22.0))? };
    if legend.is_empty() {
        return Ok(area);
    }
    let label_style = text.style(13.0);
    let widest = legend
        .iter()
        .map(|(name, ..)| area.estimate_text_size(name, &label_style).map(|(w, _)| w))
        .try_fold(0, |widest, w| w.map(|w| widest.max(w)))?;
    let (width, _) = area.dim_in_pixel();
    let panel = (widest as i32 + 50).clamp(90, width as i32 * 2 / 5);
    let (plot, side) = area.split_horizontally(width as i32 - panel);
    let style = label_style.pos(Pos::new(HPos::Left, VPos::Center));
    let (_, side_height) = side.dim_in_pixel();
    for (row, (name, color, mark)) in legend.iter().enumerate() {
        let y = 25 + 20 * row as i32;
        if y + 10 > side_height as i32 {
            warnings.push(format!("the legend shows {row} of {} entries", legend.len()));
            break;
        }
        let line = color.stroke_width(2);
        let x = 8;
        match mark {
            Mark::Line(LineStyle::Solid) => side.draw(&PathElement::new(vec![(x, y), (x + 24, y)], line))?,
            Mark::Line(LineStyle::Dashed) => {
                side.draw(&PathElement::new(vec![(x, y), (x + 9, y)], line))?;
                side.draw(&PathElement::new(vec![(x + 15, y), (x + 24, y)], line))?;
            }
            Mark::Line(LineStyle::Markers) => {
                side.draw(&PathElement::new(vec![(x, y), (x + 24, y)], line))?;
                side.draw(&Circle::new((x + 12, y), 3, color.filled()))?;
            }
            Mark::Bar => side.draw(&Rectangle::new([(x + 5, y - 6), (x + 19, y + 6)], color.filled()))?,
        }
        side.draw_text(name, &style, (x + 32, y))?;
    }
    Ok(plot)
}

fn draw_lines(
    area: &Area<'_>,
    text: TextMode,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    warnings: &mut Vec<String>,
) -> Drawn {
    // Keep only plottable points; report what was dropped.
    let cleaned: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(|&(x, y)| plottable(x) && plottable(y)).collect())
        .collect();
    for (s, points) in series.iter().zip(&cleaned) {
        let skipped = s.points.len() - points.len();
        if skipped > 0 {
            warnings.push(format!("series {:?}: skipped {skipped} non-finite or out-of-range points", s.name));
        }
        if points.is_empty() {
            warnings.push(format!("series {:?} has no points to draw", s.name));
        }
    }
    if series.is_empty() {
        warnings.push("no series to draw".to_owned());
    }
    let all = cleaned.iter().flatten();
    let (x_lo, x_hi, y_lo, y_hi) = all
        .fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
    let x_range = padded(x_lo, x_hi, 0.02);
    let y_range = padded(y_lo, y_hi, 0.05);
    let (x_ticks, y_ticks) = (tick_formatter(&x_range), tick_formatter(&y_range));

    let color = |i: usize, s: &Series| color_of(s.color.unwrap_or(i));
    let legend: Vec<_> = series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.name.is_empty())
        .map(|(i, s)| (s.name.clone(), color(i, s), Mark::Line(s.style)))
        .collect();
    let plot = frame(area, text, title, &legend, warnings)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x_range, y_range)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(TRANSPARENT)
        .x_label_formatter(&x_ticks)
        .y_label_formatter(&y_ticks)
        .label_style(text.style(13.0))
        .axis_desc_style(text.style(16.0));
    if text.enabled {
        mesh.x_desc(x_label).y_desc(y_label);
    }
    mesh.draw()?;

    for (i, (s, points)) in series.iter().zip(cleaned).enumerate() {
        if points.is_empty() {
            continue;
        }
        let line = color(i, s).stroke_width(2);
        // A lone point has no line to draw: it always gets a marker.
        match s.style {
            LineStyle::Solid if points.len() > 1 => chart.draw_series(LineSeries::new(points, line))?,
            LineStyle::Dashed if points.len() > 1 => chart.draw_series(DashedLineSeries::new(points, 8, 5, line))?,
            LineStyle::Solid | LineStyle::Dashed | LineStyle::Markers => {
                chart.draw_series(LineSeries::new(points, line).point_size(3))?
            }
        };
    }
    Ok(())
}

/// An x axis of `n` groups centred on 0, 1, …, n-1, with a tick (and label)
/// on each group and no other mesh line.
struct GroupAxis {
    inner: RangedCoordf64,
    groups: usize,
}

impl Ranged for GroupAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { (0..self.groups).map(|g| g as f64).collect() }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

fn draw_bars(
    area: &Area<'_>,
    text: TextMode,
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
    bar_names: &[String],
    warnings: &mut Vec<String>,
) -> Drawn {
    let bars = groups.iter().map(|(_, values)| values.len()).max().unwrap_or(0).max(bar_names.len());
    if groups.is_empty() {
        warnings.push("no groups to draw".to_owned());
    }
    for (name, values) in groups {
        if values.len() != bar_names.len() {
            warnings.push(format!("group {name:?} has {} values for {} bar names", values.len(), bar_names.len()));
        }
        let skipped = values.iter().filter(|v| !plottable(**v)).count();
        if skipped > 0 {
            warnings.push(format!("group {name:?}: skipped {skipped} non-finite or out-of-range values"));
        }
    }
    // Bars rise from zero, so zero is always on the axis.
    let (lo, hi) = groups
        .iter()
        .flat_map(|(_, values)| values.iter().copied().filter(|v| plottable(*v)))
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let y_range = if lo == 0.0 && hi == 0.0 {
        0.0..1.0
    } else {
        let pad = (hi - lo) * 0.05;
        (if lo < 0.0 { lo - pad } else { 0.0 })..(if hi > 0.0 { hi + pad } else { 0.0 })
    };
    let y_ticks = tick_formatter(&y_range);
    let x_axis = GroupAxis { inner: (-0.5..groups.len().max(1) as f64 - 0.5).into(), groups: groups.len() };
    let group_label = |v: &f64| {
        let g = v.round();
        let name = groups.get(g as usize).filter(|_| g >= 0.0 && (v - g).abs() < 1e-9);
        name.map(|(name, _)| name.clone()).unwrap_or_default()
    };

    let bar_name = |bar: usize| bar_names.get(bar).cloned().unwrap_or_else(|| format!("bar {}", bar + 1));
    let legend: Vec<_> =
        (0..bars).map(|bar| (bar_name(bar), color_of(bar), Mark::Bar)).filter(|(name, ..)| !name.is_empty()).collect();
    let plot = frame(area, text, title, &legend, warnings)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(75)
        .build_cartesian_2d(x_axis, y_range)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&group_label)
        .y_label_formatter(&y_ticks)
        .label_style(text.style(13.0))
        .axis_desc_style(text.style(16.0));
    if text.enabled {
        mesh.y_desc(y_label);
    }
    mesh.draw()?;

    // Each group spans 0.8 of its unit slot; bars split it evenly, with a small gap.
    let slot = 0.8 / bars.max(1) as f64;
    for bar in 0..bars {
        let color = color_of(bar);
        let rects = groups.iter().enumerate().filter_map(|(g, (_, values))| {
            let v = *values.get(bar)?;
            if !plottable(v) {
                return None;
            }
            let x0 = g as f64 - 0.4 + bar as f64 * slot;
            Some(Rectangle::new([(x0 + slot * 0.08, 0.0), (x0 + slot * 0.92, v)], color.filled()))
        });
        chart.draw_series(rects)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::BufReader;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

    /// Decodes the PNG at `path`: its dimensions and RGB pixels.
    fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
        let bytes = fs::read(path).unwrap();
        assert_eq!(bytes[..8], PNG_SIGNATURE, "{} is not a PNG", path.display());
        let mut reader = png::Decoder::new(BufReader::new(fs::File::open(path).unwrap())).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect())
    }

    /// Asserts a valid 800×500 PNG that is not blank; returns its pixels.
    fn assert_chart(path: &Path) -> Vec<[u8; 3]> {
        let (w, h, pixels) = decode(path);
        assert_eq!((w, h), DEFAULT_SIZE);
        assert!(pixels.iter().any(|p| *p != pixels[0]), "{} is all one colour", path.display());
        pixels
    }

    fn count(pixels: &[[u8; 3]], color: RGBColor) -> usize {
        pixels.iter().filter(|p| **p == [color.0, color.1, color.2]).count()
    }

    fn series(name: &str, f: impl Fn(f64) -> f64) -> Series {
        Series::new(name, (1..=20).map(|x| (x as f64, f(x as f64))).collect())
    }

    #[test]
    fn learning_curves_are_written_as_a_png_of_the_default_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report/loss.png");
        let curves = vec![
            series("click train", |e| 0.7 / e.sqrt()),
            series("click validation", |e| 0.72 / e.sqrt() + 0.02).with_style(LineStyle::Dashed),
            series("watch time train", |e| 1.2 / e),
            series("watch time validation", |e| 1.25 / e + 0.05).with_style(LineStyle::Dashed),
        ];
        let note = line_chart(&path, "Learning curves", "epoch", "loss", &curves).unwrap();
        assert_eq!(note.text, font_path().is_some());
        assert_eq!(note.is_clean(), font_path().is_some(), "{note}");
        let pixels = assert_chart(&path);
        for slot in 0..4 {
            assert!(count(&pixels, color_of(slot)) > 50, "series {slot} not drawn");
        }
    }

    #[test]
    fn bias_curves_share_a_colour_per_device_across_styles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bias.png");
        let mut curves = Vec::new();
        for (d, device) in ["phone", "tv"].into_iter().enumerate() {
            let k = 1.0 + d as f64;
            curves.push(series(&format!("{device} true"), |p| 1.0 / (p / k).powf(0.8)).with_style(LineStyle::Dashed));
            curves.push(series(&format!("{device} learned"), |p| 0.95 / (p / k).powf(0.75)));
            let n = curves.len();
            curves[n - 2].color = Some(d);
            curves[n - 1] = curves[n - 1].clone().with_style(LineStyle::Markers).with_color(d);
        }
        let note = line_chart(&path, "Position bias", "position", "relative click rate", &curves).unwrap();
        assert_eq!(note.is_clean(), font_path().is_some(), "{note}");
        let pixels = assert_chart(&path);
        assert!(count(&pixels, color_of(0)) > 50 && count(&pixels, color_of(1)) > 50);
        assert_eq!(count(&pixels, color_of(2)), 0, "only two colours were asked for");
    }

    #[test]
    fn non_finite_points_are_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.png");
        let bad = Series::new(
            "bad",
            vec![(1.0, f64::NAN), (2.0, 0.5), (f64::INFINITY, 1.0), (3.0, f64::NEG_INFINITY), (4.0, 0.25)],
        );
        let all_bad = Series::new("all bad", vec![(f64::NAN, f64::NAN)]).with_style(LineStyle::Dashed);
        let note = line_chart(&path, "t", "x", "y", &[bad, all_bad]).unwrap();
        assert!(note.warnings.iter().any(|w| w.contains("\"bad\": skipped 3")), "{note}");
        assert!(note.warnings.iter().any(|w| w.contains("\"all bad\" has no points")), "{note}");
        let pixels = assert_chart(&path);
        assert!(count(&pixels, color_of(0)) > 0);
    }

    #[test]
    fn empty_input_still_writes_a_chart() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("empty-lines.png");
        let note = line_chart(&lines, "", "", "", &[]).unwrap();
        assert!(note.warnings.iter().any(|w| w.contains("no series")), "{note}");
        assert_chart(&lines);

        let no_points = dir.path().join("no-points.png");
        let note = line_chart(&no_points, "t", "x", "y", &[Series::new("", vec![])]).unwrap();
        assert!(!note.is_clean());
        assert_chart(&no_points);

        let bars = dir.path().join("empty-bars.png");
        let note = grouped_bars(&bars, "", "", &[], &[]).unwrap();
        assert!(note.warnings.iter().any(|w| w.contains("no groups")), "{note}");
        assert_chart(&bars);
    }

    #[test]
    fn single_points_and_flat_ranges_are_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flat.png");
        let curves = [
            Series::new("one point", vec![(3.0, 0.5)]),
            Series::new("flat", vec![(3.0, 0.5), (3.0, 0.5)]).with_style(LineStyle::Dashed),
        ];
        let note = line_chart(&path, "flat", "x", "y", &curves).unwrap();
        assert_eq!(note.is_clean(), font_path().is_some(), "{note}");
        let pixels = assert_chart(&path);
        assert!(count(&pixels, color_of(0)) > 0 || count(&pixels, color_of(1)) > 0, "the point is not drawn");

        let zero = dir.path().join("zero.png");
        let note = line_chart(&zero, "zero", "x", "y", &[Series::new("zero", vec![(0.0, 0.0)])]).unwrap();
        assert_eq!(note.is_clean(), font_path().is_some(), "{note}");
        assert_chart(&zero);
    }

    #[test]
    fn extreme_values_neither_hang_nor_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extreme.png");
        let curves = [
            Series::new("huge", vec![(-1e300, -1e300), (1e300, 1e300), (f64::MAX, 0.0)]).with_style(LineStyle::Dashed),
            Series::new("tiny", vec![(0.0, 5e-324), (1e-310, 0.0)]),
        ];
        let note = line_chart(&path, "extreme", "x", "y", &curves).unwrap();
        assert!(note.warnings.iter().any(|w| w.contains("\"huge\": skipped 1")), "{note}");
        assert_chart(&path);

        let bars = dir.path().join("extreme-bars.png");
        let groups = [("g".to_owned(), vec![1e300, -1e300, f64::MAX])];
        let note = grouped_bars(&bars, "extreme", "y", &groups, &[]).unwrap();
        assert!(note.to_string().contains("\"g\": skipped 1"), "{note}");
        assert_chart(&bars);
    }

    #[test]
    fn expert_utilisation_bars_are_written_one_colour_per_expert() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("experts.png");
        let experts: Vec<String> = (0..4).map(|e| format!("expert {e}")).collect();
        let groups: Vec<(String, Vec<f64>)> = ["click", "watch_time", "like"]
            .iter()
            .enumerate()
            .map(|(t, task)| (task.to_string(), (0..4).map(|e| 0.1 + 0.1 * ((t + e) % 4) as f64).collect()))
            .collect();
        let note = grouped_bars(&path, "Expert utilisation", "mean gate weight", &groups, &experts).unwrap();
        assert_eq!(note.is_clean(), font_path().is_some(), "{note}");
        let pixels = assert_chart(&path);
        for e in 0..4 {
            assert!(count(&pixels, color_of(e)) > 200, "expert {e} has no bars");
        }
        assert_eq!(count(&pixels, color_of(4)), 0);
    }

    #[test]
    fn ragged_negative_and_non_finite_bars_are_drawn_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ragged.png");
        let groups = [
            ("short".to_owned(), vec![0.5]),
            ("long".to_owned(), vec![0.2, -0.3, 0.1]),
            ("bad".to_owned(), vec![f64::NAN, f64::INFINITY]),
        ];
        let names = ["a".to_owned(), "b".to_owned()];
        let note = grouped_bars(&path, "ragged", "w", &groups, &names).unwrap();
        let text = note.to_string();
        assert!(text.contains("\"short\" has 1 values for 2 bar names"), "{text}");
        assert!(text.contains("\"long\" has 3 values"), "{text}");
        assert!(text.contains("\"bad\": skipped 2"), "{text}");
        let pixels = assert_chart(&path);
        for bar in 0..3 {
            assert!(count(&pixels, color_of(bar)) > 0, "bar {bar} not drawn");
        }
    }

    #[test]
    fn without_a_font_the_chart_is_drawn_without_text() {
        let dir = tempfile::tempdir().unwrap();
        let curves = [series("a", |x| x), series("b", |x| 20.0 - x).with_style(LineStyle::Markers)];
        let plain = dir.path().join("plain.png");
        // The family named when text is off is never registered: drawing any text would fail.
        let note = write_chart(&plain, TextMode { enabled: false }, |area, text, warnings| {
            draw_lines(area, text, "title", "x", "y", &curves, warnings)
        })
        .unwrap();
        assert!(!note.text);
        assert!(note.warnings[0].contains("no TrueType font"), "{note}");
        let plain_pixels = assert_chart(&plain);

        let bars = dir.path().join("plain-bars.png");
        let groups = [("g".to_owned(), vec![1.0, 2.0])];
        let note = write_chart(&bars, TextMode { enabled: false }, |area, text, warnings| {
            draw_bars(area, text, "title", "y", &groups, &["e1".to_owned(), "e2".to_owned()], warnings)
        })
        .unwrap();
        assert_eq!(note.warnings.len(), 1, "{note}");
        assert_chart(&bars);

        if font_path().is_some() {
            // With the font, the same chart gains text: many more dark pixels.
            let texted = dir.path().join("text.png");
            let note = line_chart(&texted, "title", "x", "y", &curves).unwrap();
            assert!(note.text && note.is_clean(), "{note}");
            let dark = |pixels: &[[u8; 3]]| pixels.iter().filter(|p| p.iter().all(|&c| c < 100)).count();
            assert!(dark(&assert_chart(&texted)) > dark(&plain_pixels) + 500);
        }
    }

    #[test]
    fn many_series_reuse_the_palette_and_a_long_legend_is_cut_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.png");
        let curves: Vec<Series> = (0..40).map(|i| series(&format!("series {i}"), |x| x * i as f64)).collect();
        let note = line_chart(&path, "many", "x", "y", &curves).unwrap();
        if font_path().is_some() {
            assert!(
                note.warnings.iter().any(|w| w.starts_with("the legend shows") && w.ends_with("of 40 entries")),
                "{note}"
            );
        }
        let pixels = assert_chart(&path);
        assert!(PALETTE.iter().all(|&c| count(&pixels, c) > 0));
    }

    #[test]
    fn tick_labels_have_the_decimals_the_spacing_needs() {
        let labels = |range: Range<f64>, values: &[f64]| {
            let f = tick_formatter(&range);
            values.iter().map(&f).collect::<Vec<_>>()
        };
        assert_eq!(labels(1.0..20.0, &[2.0, 4.0, 20.0]), ["2", "4", "20"]);
        assert_eq!(labels(0.0..1.3, &[0.0, 0.2, 1.2]), ["0", "0.2", "1.2"]);
        assert_eq!(labels(0.0..0.42, &[0.05, 0.35, 0.4]), ["0.05", "0.35", "0.4"]);
        assert_eq!(labels(3e7..3.5e7, &[3.05e7, 3.4e7]), ["3.05e7", "3.4e7"]);
        assert_eq!(labels(-1e300..1e300, &[-8e299, 1e300]), ["-8e299", "1e300"]);
        assert_eq!(labels(1e-5..2e-5, &[1.1e-5]), ["1.1e-5"]);
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let path = file.join("chart.png");
        let err = line_chart(&path, "t", "x", "y", &[series("a", |x| x)]).unwrap_err();
        assert!(matches!(err, ChartError::Write { .. }), "{err:?}");
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");

        let err = grouped_bars(&path, "t", "y", &[], &[]).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn rewriting_a_chart_replaces_it_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let _ = line_chart(&path, "one", "x", "y", &[series("a", |x| x)]).unwrap();
        let first = fs::read(&path).unwrap();
        let _ = grouped_bars(&path, "two", "y", &[("g".to_owned(), vec![1.0])], &["e".to_owned()]).unwrap();
        assert_ne!(fs::read(&path).unwrap(), first);
        assert_chart(&path);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("chart.png")]);
    }
}
