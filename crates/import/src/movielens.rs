//! MovieLens (GroupLens Research), in every standard layout, detected from
//! the files of the folder:
//!
//! | layout | ratings | movies |
//! |---|---|---|
//! | `ml-100k` | `u.data`: `user⇥item⇥rating⇥unix seconds` | `u.item`: `id\|title\|release date\|video release date\|IMDb URL\|19 genre flags` (Latin-1), genre names from `u.genre` (the standard 19 when absent) |
//! | `ml-1m`, `ml-10m` | `ratings.dat`: `UserID::MovieID::Rating::Timestamp` | `movies.dat`: `MovieID::Title::Genre\|Genre` (Latin-1 in ml-1m) |
//! | `ml-latest*`, `ml-20m`, `ml-25m` | `ratings.csv`: `userId,movieId,rating,timestamp` | `movies.csv`: `movieId,title,genres` (RFC 4180 quoting) |
//!
//! Text is read as UTF-8 and, where a line is not valid UTF-8, as Latin-1.
//! See the crate documentation for how movies and ratings become the
//! catalogue and the events.
//!
//! Memory: every rating is held as a 16-byte record (plus 4 bytes in the
//! per-user rated sets) while the whole file is sorted by time, so ml-25m
//! needs about 0.5–0.8 GB besides what the sink keeps.

use std::{collections::HashMap, path::Path};

use rand::{RngExt, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use watchnext_core::{
    Device, UserId, VideoId,
    catalog::{Catalog, Video},
    event::{Event, EventKind, EventSink, Impression},
};

use crate::{
    error::{ImportError, OnError, Problems},
    report::{Emitter, Imported},
    text::{self, Lines},
};

/// Impressions of unrated movies added to each rating's list by default.
pub const DEFAULT_NEGATIVES: u32 = 4;

/// The genre names of `u.genre` in ml-100k, used when the file is absent.
pub const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Genre names that mean "no genre": they give a movie no topic.
const NO_GENRE: [&str; 2] = ["(no genres listed)", "unknown"];

/// How to import a MovieLens folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovieLensOptions {
    /// Unrated movies shown next to each rated one (fewer when the user has
    /// rated nearly every rated movie).
    pub negatives: u32,
    /// Seed of the negative sampling and the position shuffle.
    pub seed: u64,
    pub on_error: OnError,
}

impl Default for MovieLensOptions {
    fn default() -> Self {
        Self { negatives: DEFAULT_NEGATIVES, seed: 0, on_error: OnError::default() }
    }
}

/// The file layout of a MovieLens release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovieLensLayout {
    /// `u.data` + `u.item` (+ `u.genre`).
    Ml100k,
    /// `ratings.dat` + `movies.dat` (ml-1m, ml-10m).
    Dat,
    /// `ratings.csv` + `movies.csv` (ml-latest, ml-latest-small, ml-20m, ml-25m).
    Csv,
}

impl MovieLensLayout {
    /// Recognises the layout from the files present in `dir`.
    pub fn detect(dir: &Path) -> Result<Self, ImportError> {
        let has = |name: &str| dir.join(name).is_file();
        if has("ratings.csv") && has("movies.csv") {
            Ok(Self::Csv)
        } else if has("ratings.dat") && has("movies.dat") {
            Ok(Self::Dat)
        } else if has("u.data") && has("u.item") {
            Ok(Self::Ml100k)
        } else {
            Err(ImportError::unusable(
                &text::shown(dir),
                "is not a MovieLens folder: expected u.data + u.item (ml-100k), ratings.dat + movies.dat (ml-1m, \
                 ml-10m) or ratings.csv + movies.csv (ml-latest, ml-20m, ml-25m)",
            ))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ml100k => "ml-100k",
            Self::Dat => "ml-1m/ml-10m (.dat)",
            Self::Csv => "ml-latest/ml-20m/ml-25m (.csv)",
        }
    }

    pub fn ratings_file(self) -> &'static str {
        match self {
            Self::Ml100k => "u.data",
            Self::Dat => "ratings.dat",
            Self::Csv => "ratings.csv",
        }
    }

    pub fn movies_file(self) -> &'static str {
        match self {
            Self::Ml100k => "u.item",
            Self::Dat => "movies.dat",
            Self::Csv => "movies.csv",
        }
    }
}

/// One rating, as held while sorting. `user` is the raw id while reading and
/// the dense index (in numeric id order) afterwards; `movie` is the dense
/// catalogue index; `half_stars` is the rating × 2 (1..=10), 0 marks a
/// duplicate to drop.
#[derive(Debug, Clone, Copy)]
struct Rec {
    ts: u32,
    user: u32,
    movie: u32,
    half_stars: u8,
}

const _: () = assert!(size_of::<Rec>() == 16);

/// A rating line's fields, parsed.
#[derive(Debug, Clone, Copy)]
struct RawRating {
    user: u32,
    movie: u32,
    half_stars: u8,
    ts: u32,
}

/// Imports the MovieLens folder `dir`: the catalogue of every movie, and one
/// served list per rating into `sink`, in time order.
pub fn import_movielens<S: EventSink>(
    dir: &Path,
    options: &MovieLensOptions,
    sink: &mut S,
) -> Result<Imported, ImportError> {
    let layout = MovieLensLayout::detect(dir)?;
    let mut problems = Problems::new(options.on_error);
    let mut lines_read = 0;

    // Movies → catalogue, ordered by numeric id.
    let movies_path = dir.join(layout.movies_file());
    let mut movies = read_movies(layout, dir, &mut problems, &mut lines_read)?;
    movies.sort_unstable_by_key(|(id, _)| *id);
    let movie_ids: Vec<u32> = movies.iter().map(|(id, _)| *id).collect();
    let movie_index: HashMap<u32, u32> = movie_ids.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    let catalog = Catalog::new(movies.into_iter().map(|(_, v)| v).collect())
        .map_err(|p| ImportError::unusable(&text::shown(&movies_path), p))?;

    // Ratings → compact records.
    let ratings_path = dir.join(layout.ratings_file());
    let shown_ratings = text::shown(&ratings_path);
    let mut recs: Vec<Rec> = Vec::new();
    lines_read += for_each_rating(layout, &ratings_path, |line, parsed| {
        match parsed.and_then(|r| with_movie(r, &movie_index)) {
            Ok((r, movie)) => recs.push(Rec { ts: r.ts, user: r.user, movie, half_stars: r.half_stars }),
            Err(problem) => problems.line(&shown_ratings, line, problem)?,
        }
        Ok(())
    })?;
    if u32::try_from(recs.len()).is_err() {
        return Err(ImportError::unusable(&shown_ratings, "has more than 4 billion ratings"));
    }

    // Users: dense indices in numeric id order.
    let mut users: Vec<u32> = recs.iter().map(|r| r.user).collect();
    users.sort_unstable();
    users.dedup();
    users.shrink_to_fit();
    let user_index: HashMap<u32, u32> = users.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    for r in &mut recs {
        r.user = user_index[&r.user];
    }
    drop(user_index);

    // Each user's rated movies (sorted, for the negative sampling); a second
    // rating of the same movie is dropped and reported.
    let (offsets, rated, duplicates) = rated_sets(&mut recs, users.len());
    if !duplicates.is_empty() {
        report_duplicates(layout, &ratings_path, &users, &movie_ids, &duplicates, &movie_index, &mut problems)?;
        recs.retain(|r| r.half_stars != 0);
    }
    let mut is_rated = vec![false; catalog.len()];
    for &m in &rated {
        is_rated[m as usize] = true;
    }
    let pool: Vec<u32> = (0..catalog.len() as u32).filter(|&m| is_rated[m as usize]).collect();
    drop(is_rated);

    // Time order; ties by user, then movie (both numeric).
    recs.sort_unstable_by_key(|r| (r.ts, r.user, r.movie));

    let video_ids = catalog
        .videos()
        .iter()
        .map(|v| VideoId::parse("video_id", &v.id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ImportError::unusable(&text::shown(&movies_path), e.to_string()))?;
    let user_ids = users
        .iter()
        .map(|u| UserId::parse("user_id", &u.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ImportError::unusable(&shown_ratings, e.to_string()))?;

    let mut out = Emitter::new(sink);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut previous: Vec<Option<u32>> = vec![None; users.len()];
    let mut slate: Vec<u32> = Vec::with_capacity((options.negatives as usize).min(pool.len()) + 1);
    let mut scratch: Vec<u32> = Vec::new();
    for r in &recs {
        let u = r.user as usize;
        let user_rated = &rated[offsets[u]..offsets[u + 1]];
        slate.clear();
        slate.push(r.movie);
        sample_negatives(&mut rng, &pool, user_rated, options.negatives as usize, &mut slate, &mut scratch);
        slate.shuffle(&mut rng);

        let timestamp_ms = i64::from(r.ts) * 1000;
        let request_id = format!("ml:{}:{}", users[u], movie_ids[r.movie as usize]);
        let query_video = previous[u].map(|m| video_ids[m as usize].clone());
        let event = |video: u32, kind: EventKind| Event {
            timestamp_ms,
            request_id: request_id.clone(),
            user: user_ids[u].clone(),
            video: video_ids[video as usize].clone(),
            device: Device::Unknown,
            kind,
        };
        for (i, &m) in slate.iter().enumerate() {
            let impression =
                Impression { position: i as u32 + 1, query_video: query_video.clone(), ..Impression::default() };
            out.push(event(m, EventKind::Impression(impression)))?;
        }
        out.push(event(r.movie, EventKind::Click))?;
        out.push(event(r.movie, EventKind::Watch { seconds_watched: 0.0, video_duration_seconds: 0.0 }))?;
        out.push(event(r.movie, EventKind::Rating { value: f32::from(r.half_stars) / 2.0 }))?;
        if r.half_stars >= 8 {
            out.push(event(r.movie, EventKind::Like))?;
        }
        if r.half_stars <= 4 {
            out.push(event(r.movie, EventKind::Dismiss))?;
        }
        previous[u] = Some(r.movie);
    }

    let source = format!("movielens {} ({})", layout.name(), text::shown(dir));
    let report = out.finish(source, lines_read, users.len() as u64, &catalog, problems);
    Ok(Imported { catalog, report })
}

/// Adds up to `want` distinct movies from `pool` that are not in `rated`
/// (both sorted) to `slate`, uniformly. Draws with rejection while at least a
/// quarter of the pool is unrated, else from the explicit complement.
fn sample_negatives(
    rng: &mut ChaCha8Rng,
    pool: &[u32],
    rated: &[u32],
    want: usize,
    slate: &mut Vec<u32>,
    scratch: &mut Vec<u32>,
) {
    let available = pool.len().saturating_sub(rated.len());
    let want = want.min(available);
    if want == 0 {
        return;
    }
    let target = slate.len() + want;
    if available * 4 >= pool.len() {
        let n = pool.len() as u32;
        while slate.len() < target {
            let m = pool[rng.random_range(0..n) as usize];
            if rated.binary_search(&m).is_err() && !slate.contains(&m) {
                slate.push(m);
            }
        }
    } else {
        scratch.clear();
        let mut j = 0;
        for &m in pool {
            while j < rated.len() && rated[j] < m {
                j += 1;
            }
            if j < rated.len() && rated[j] == m {
                continue;
            }
            scratch.push(m);
        }
        let n = scratch.len() as u32;
        for k in 0..want as u32 {
            let pick = rng.random_range(k..n);
            scratch.swap(k as usize, pick as usize);
            slate.push(scratch[k as usize]);
        }
    }
}

/// Groups the ratings by user (a counting sort), sorts each user's movies
/// and drops a repeated (user, movie) pair, keeping the first in file order.
/// Returns the offsets of each user's slice of the sorted movie list, the
/// list, and the dropped pairs (dense user, dense movie).
fn rated_sets(recs: &mut [Rec], n_users: usize) -> (Vec<usize>, Vec<u32>, Vec<(u32, u32)>) {
    let mut offsets = vec![0usize; n_users + 1];
    for r in recs.iter() {
        offsets[r.user as usize + 1] += 1;
    }
    for u in 0..n_users {
        offsets[u + 1] += offsets[u];
    }
    let mut fill = offsets.clone();
    let mut list = vec![0u32; recs.len()];
    for (i, r) in recs.iter().enumerate() {
        let slot = &mut fill[r.user as usize];
        list[*slot] = i as u32;
        *slot += 1;
    }
    drop(fill);
    // Per user: record indices → sorted movie indices, compacted in place.
    let mut duplicates = Vec::new();
    let mut write = 0;
    for u in 0..n_users {
        let (start, end) = (offsets[u], offsets[u + 1]);
        list[start..end].sort_unstable_by_key(|&i| (recs[i as usize].movie, i));
        offsets[u] = write;
        let mut last = None;
        for j in start..end {
            let i = list[j] as usize;
            let movie = recs[i].movie;
            if last == Some(movie) {
                recs[i].half_stars = 0;
                duplicates.push((u as u32, movie));
                continue;
            }
            last = Some(movie);
            list[write] = movie;
            write += 1;
        }
    }
    offsets[n_users] = write;
    list.truncate(write);
    (offsets, list, duplicates)
}

/// Finds the lines of repeated ratings (a second pass over the file, only
/// when there are any) and reports each after the first.
fn report_duplicates(
    layout: MovieLensLayout,
    path: &Path,
    users: &[u32],
    movie_ids: &[u32],
    duplicates: &[(u32, u32)],
    movie_index: &HashMap<u32, u32>,
    problems: &mut Problems,
) -> Result<(), ImportError> {
    let shown = text::shown(path);
    let mut seen: HashMap<(u32, u32), bool> =
        duplicates.iter().map(|&(u, m)| ((users[u as usize], movie_ids[m as usize]), false)).collect();
    for_each_rating(layout, path, |line, parsed| {
        let Ok((r, _)) = parsed.and_then(|r| with_movie(r, movie_index)) else { return Ok(()) };
        if let Some(first_seen) = seen.get_mut(&(r.user, r.movie)) {
            if *first_seen {
                problems.line(
                    &shown,
                    line,
                    format!("user {} rated movie {} again; only the first rating is kept", r.user, r.movie),
                )?;
            }
            *first_seen = true;
        }
        Ok(())
    })?;
    Ok(())
}

fn with_movie(r: RawRating, movie_index: &HashMap<u32, u32>) -> Result<(RawRating, u32), String> {
    match movie_index.get(&r.movie) {
        Some(&m) => Ok((r, m)),
        None => Err(format!("movie {} is not in the movies file", r.movie)),
    }
}

fn parse_u32(field: &[u8], what: &str) -> Result<u32, String> {
    let s = text::ascii(field)?.trim();
    s.parse().map_err(|_| format!("{what} `{s}` is not a whole number in 0..=4294967295"))
}

fn parse_rating(user: &[u8], movie: &[u8], rating: &[u8], ts: &[u8]) -> Result<RawRating, String> {
    let user = parse_u32(user, "user id")?;
    let movie = parse_u32(movie, "movie id")?;
    let rating_text = text::ascii(rating)?.trim();
    let value: f32 = rating_text.parse().map_err(|_| format!("rating `{rating_text}` is not a number"))?;
    let half = value * 2.0;
    if !(half.is_finite() && (1.0..=10.0).contains(&half) && (half - half.round()).abs() < 1e-3) {
        return Err(format!("rating `{rating_text}` is not one of 0.5, 1, 1.5 … 5"));
    }
    let ts = parse_u32(ts, "timestamp (Unix seconds)")?;
    Ok(RawRating { user, movie, half_stars: half.round() as u8, ts })
}

/// Splits `line` on a multi-byte separator.
fn split_on<'a>(line: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                rest = Some(&r[i + sep.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The first four items and how many there were.
fn first_four<'a>(items: impl Iterator<Item = &'a [u8]>) -> ([&'a [u8]; 4], usize) {
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for item in items {
        if let Some(slot) = fields.get_mut(n) {
            *slot = item;
        }
        n += 1;
    }
    (fields, n)
}

/// Calls `f` with every data line of the ratings file, parsed; returns the
/// number of data lines.
fn for_each_rating(
    layout: MovieLensLayout,
    path: &Path,
    mut f: impl FnMut(u64, Result<RawRating, String>) -> Result<(), ImportError>,
) -> Result<u64, ImportError> {
    let mut lines = 0;
    match layout {
        MovieLensLayout::Csv => {
            let shown = text::shown(path);
            let mut reader = text::CsvReader::open(path)?;
            let mut record = text::Record::default();
            if !reader.read(&mut record)? {
                return Ok(0);
            }
            let names = text::header_names(&record);
            let line = record.line();
            let cols = [
                text::column(&names, "userId", &shown, line)?,
                text::column(&names, "movieId", &shown, line)?,
                text::column(&names, "rating", &shown, line)?,
                text::column(&names, "timestamp", &shown, line)?,
            ];
            while reader.read(&mut record)? {
                lines += 1;
                let parsed = if let Some(problem) = record.shape_problem(names.len()) {
                    Err(problem)
                } else {
                    parse_rating(&record[cols[0]], &record[cols[1]], &record[cols[2]], &record[cols[3]])
                };
                f(record.line(), parsed)?;
            }
        }
        MovieLensLayout::Dat | MovieLensLayout::Ml100k => {
            let mut reader = Lines::open(path)?;
            while let Some((line, bytes)) = reader.next_line()? {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                lines += 1;
                let (fields, n) = if layout == MovieLensLayout::Dat {
                    first_four(split_on(bytes, b"::"))
                } else {
                    first_four(bytes.split(|b| *b == b'\t' || *b == b' ').filter(|f| !f.is_empty()))
                };
                let parsed = if n == 4 {
                    parse_rating(fields[0], fields[1], fields[2], fields[3])
                } else {
                    Err(format!("has {n} fields; expected user, movie, rating, timestamp"))
                };
                f(line, parsed)?;
            }
        }
    }
    Ok(lines)
}

/// The year in a title such as `Heat (1995)` or `Babylon 5 (1994–1998)`:
/// the last `(` followed by four digits and `)` or a dash.
fn title_year(title: &str) -> Option<i64> {
    let b = title.as_bytes();
    let mut year = None;
    for i in 0..b.len().saturating_sub(5) {
        if b[i] == b'('
            && b[i + 1..i + 5].iter().all(u8::is_ascii_digit)
            && matches!(b[i + 5], b')' | b'-' | 0xE2 /* first byte of – and — */)
        {
            year = title[i + 1..i + 5].parse::<i64>().ok();
        }
    }
    year.filter(|y| (1800..=2200).contains(y))
}

fn video(id: u32, title: &str, genres: impl IntoIterator<Item = String>) -> Video {
    let title = title.trim().to_owned();
    let upload_ms = title_year(&title).map_or(0, |y| text::days_from_civil(y, 1, 1) * text::MS_PER_DAY);
    let topics = genres.into_iter().filter(|g| !g.is_empty() && !NO_GENRE.contains(&g.as_str())).collect();
    Video { id: id.to_string(), title, topics, duration_seconds: 0.0, upload_ms }
}

fn genres(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('|').map(|g| g.trim().to_owned())
}

/// Reads the movies file into (movie id, video); a repeated id is a
/// malformed line.
fn read_movies(
    layout: MovieLensLayout,
    dir: &Path,
    problems: &mut Problems,
    lines_read: &mut u64,
) -> Result<Vec<(u32, Video)>, ImportError> {
    let path = dir.join(layout.movies_file());
    let shown = text::shown(&path);
    let mut movies = Vec::new();
    let mut first_line: HashMap<u32, u64> = HashMap::new();
    let mut accept = |line: u64, parsed: Result<(u32, Video), String>, problems: &mut Problems| {
        let parsed = parsed.and_then(|(id, v)| match first_line.get(&id) {
            Some(first) => Err(format!("movie {id} appears again (first on line {first})")),
            None => Ok((id, v)),
        });
        match parsed {
            Ok((id, v)) => {
                first_line.insert(id, line);
                movies.push((id, v));
                Ok(())
            }
            Err(problem) => problems.line(&shown, line, problem),
        }
    };
    match layout {
        MovieLensLayout::Csv => {
            let mut reader = text::CsvReader::open(&path)?;
            let mut record = text::Record::default();
            if reader.read(&mut record)? {
                let names = text::header_names(&record);
                let line = record.line();
                let id_col = text::column(&names, "movieId", &shown, line)?;
                let title_col = text::column(&names, "title", &shown, line)?;
                let genres_col = text::column(&names, "genres", &shown, line)?;
                while reader.read(&mut record)? {
                    *lines_read += 1;
                    let parsed = if let Some(problem) = record.shape_problem(names.len()) {
                        Err(problem)
                    } else {
                        parse_u32(&record[id_col], "movie id").map(|id| {
                            (
                                id,
                                video(
                                    id,
                                    &text::decode(&record[title_col]),
                                    genres(&text::decode(&record[genres_col])),
                                ),
                            )
                        })
                    };
                    accept(record.line(), parsed, problems)?;
                }
            }
        }
        MovieLensLayout::Dat => {
            let mut reader = Lines::open(&path)?;
            while let Some((line, bytes)) = reader.next_line()? {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                *lines_read += 1;
                // Id before the first `::`, genres after the last, the title between.
                let parts: Vec<&[u8]> = split_on(bytes, b"::").collect();
                let parsed = if parts.len() < 3 {
                    Err(format!("has {} `::`-separated fields; expected MovieID::Title::Genres", parts.len()))
                } else {
                    let title_bytes = &bytes[parts[0].len() + 2..bytes.len() - parts[parts.len() - 1].len() - 2];
                    parse_u32(parts[0], "movie id").map(|id| {
                        let g = text::decode(parts[parts.len() - 1]);
                        (id, video(id, &text::decode(title_bytes), genres(&g)))
                    })
                };
                accept(line, parsed, problems)?;
            }
        }
        MovieLensLayout::Ml100k => {
            let names = ml100k_genres(dir, problems, lines_read)?;
            let mut reader = Lines::open(&path)?;
            while let Some((line, bytes)) = reader.next_line()? {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                *lines_read += 1;
                let fields: Vec<&[u8]> = bytes.split(|b| *b == b'|').collect();
                let parsed = if fields.len() != 5 + names.len() {
                    Err(format!("has {} `|`-separated fields; expected 5 + {} genre flags", fields.len(), names.len()))
                } else {
                    let flags = &fields[5..];
                    match flags.iter().position(|f| *f != b"0" && *f != b"1") {
                        Some(k) => Err(format!("genre flag {} (`{}`) is not 0 or 1", k, text::decode(flags[k]))),
                        None => parse_u32(fields[0], "movie id").map(|id| {
                            let g = flags.iter().zip(&names).filter(|(f, _)| **f == b"1").map(|(_, n)| n.clone());
                            (id, video(id, &text::decode(fields[1]), g))
                        }),
                    }
                };
                accept(line, parsed, problems)?;
            }
        }
    }
    Ok(movies)
}

/// The genre names of `u.genre` (`name|index` per line), or the standard 19.
fn ml100k_genres(dir: &Path, problems: &mut Problems, lines_read: &mut u64) -> Result<Vec<String>, ImportError> {
    let path = dir.join("u.genre");
    if !path.is_file() {
        return Ok(ML100K_GENRES.iter().map(|g| (*g).to_owned()).collect());
    }
    let shown = text::shown(&path);
    let mut by_index: Vec<Option<String>> = Vec::new();
    let mut reader = Lines::open(&path)?;
    while let Some((line, bytes)) = reader.next_line()? {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        *lines_read += 1;
        let text = text::decode(bytes);
        let parsed = match text.rsplit_once('|') {
            Some((name, index)) => match index.trim().parse::<usize>() {
                Ok(i) if i < 1000 => Ok((name.trim().to_owned(), i)),
                _ => Err(format!("genre index `{index}` is not a whole number below 1000")),
            },
            None => Err("expected `name|index`".to_owned()),
        };
        match parsed {
            Ok((name, i)) => {
                if by_index.len() <= i {
                    by_index.resize(i + 1, None);
                }
                by_index[i] = Some(name);
            }
            Err(problem) => problems.line(&shown, line, problem)?,
        }
    }
    by_index.into_iter().enumerate().map(|(i, n)| n.ok_or(i)).collect::<Result<Vec<_>, _>>().map_err(|i| {
        ImportError::unusable(
            reader.path(),
            format!("names no genre with index {i}, so the genre flags cannot be read"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_come_from_the_title() {
        assert_eq!(title_year("Toy Story (1995)"), Some(1995));
        assert_eq!(title_year("1900 (Novecento) (1976)"), Some(1976));
        assert_eq!(title_year("Babylon 5 (1994–1998)"), Some(1994));
        assert_eq!(title_year("Babylon 5"), None);
        assert_eq!(title_year("(1995)"), Some(1995));
        assert_eq!(title_year("Short (12345)"), None);
    }

    #[test]
    fn ratings_must_be_half_stars() {
        assert_eq!(parse_rating(b"1", b"2", b"3.5", b"10").unwrap().half_stars, 7);
        assert_eq!(parse_rating(b"1", b"2", b"5", b"10").unwrap().half_stars, 10);
        for bad in [&b"0"[..], b"5.5", b"3.3", b"NaN", b"x", b""] {
            assert!(parse_rating(b"1", b"2", bad, b"10").is_err());
        }
        assert!(parse_rating(b"-1", b"2", b"3", b"10").is_err());
        assert!(parse_rating(b"1", b"2", b"3", b"-10").is_err());
    }

    #[test]
    fn split_on_a_two_byte_separator() {
        let parts: Vec<&[u8]> = split_on(b"1::Heat (1995)::Action|Crime", b"::").collect();
        assert_eq!(parts, [&b"1"[..], b"Heat (1995)", b"Action|Crime"]);
        assert_eq!(split_on(b"", b"::").count(), 1);
    }

    #[test]
    fn negatives_are_distinct_unrated_and_fill_when_few_remain() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let pool: Vec<u32> = (0..20).collect();
        let (mut slate, mut scratch) = (Vec::new(), Vec::new());
        // Rejection path.
        let rated = [3, 7];
        slate.push(3);
        sample_negatives(&mut rng, &pool, &rated, 10, &mut slate, &mut scratch);
        assert_eq!(slate.len(), 11);
        let mut sorted = slate[1..].to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
        assert!(sorted.iter().all(|m| !rated.contains(m)));
        // Complement path: only 2 unrated movies remain.
        let rated: Vec<u32> = (0..20).filter(|m| *m != 4 && *m != 11).collect();
        slate.truncate(1);
        sample_negatives(&mut rng, &pool, &rated, 4, &mut slate, &mut scratch);
        let mut got = slate[1..].to_vec();
        got.sort_unstable();
        assert_eq!(got, [4, 11]);
        // Nothing left.
        slate.truncate(1);
        sample_negatives(&mut rng, &pool, &pool, 4, &mut slate, &mut scratch);
        assert_eq!(slate.len(), 1);
    }
}
