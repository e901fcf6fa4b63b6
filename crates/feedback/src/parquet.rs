//! Parquet files for analysis and training: raw events (one row per event),
//! training rows (one row per labelled impression, see [`crate::join`]) and
//! a streaming reader of training rows for the trainer.
//!
//! Files are written with the `parquet` crate's Arrow writer, Snappy
//! compressed, in row groups of up to [`ROW_GROUP_ROWS`] rows. Every file is
//! written crash-safely: to a temporary file in the same folder
//! (`.<name>.tmp-<pid>-<n>`), fsynced, renamed over the target, folder
//! fsynced; a failed or abandoned write removes the temporary file.
//!
//! Column conventions: ids are UTF-8 strings; `device` is the device's
//! lowercase name (`phone`, `tv`...); candidate sources are three parallel
//! lists, `source_names` (`topic`, `cowatch`, `sequence`, `context`,
//! `unspecified`), `source_scores` and `source_ranks` (uint32, the
//! candidate's 1-based place in that generator's list, 0 when not known;
//! files written before ranks were kept lack the column and read as 0); features are `feature_schema_hash`,
//! `features_dense` (list<float32>) and `features_sparse` (list<int64>),
//! null when the impression carried none.
//!
//! Training-row columns: `timestamp_ms` (int64), `request_id`, `user_id`,
//! `video_id`, `query_video_id` (nullable), `device`, `position` (uint32),
//! `source_names`, `source_scores`, `source_ranks`, `feature_schema_hash`, `features_dense`,
//! `features_sparse`, `model_version`, `experiment_arm`, `propensity`
//! (float32), and the labels `click` (bool), `watch_seconds`,
//! `video_duration_seconds`, `watch_fraction` (float32), `like`, `dismiss`
//! (bool), `rating` (float32, nullable).
//!
//! Event columns: `seq` (uint64), `timestamp_ms`, `kind` (`impression`,
//! `click`, `watch`, `like`, `dismiss`, `rating`), `request_id` (empty for
//! organic events), `user_id`, `video_id`, `device`, then per kind (null for
//! the others): `position`, `query_video_id`, `source_names`,
//! `source_scores`, `source_ranks`, the feature columns, `model_version`, `experiment_arm`,
//! `propensity` (impressions); `seconds_watched`, `video_duration_seconds`
//! (watches); `rating` (ratings).

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use ::parquet::{
    arrow::{ArrowWriter, arrow_reader::ParquetRecordBatchReader, arrow_reader::ParquetRecordBatchReaderBuilder},
    basic::Compression,
    file::properties::WriterProperties,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, GenericListArray, Int64Array, RecordBatch, StringArray, UInt32Array,
    builder::{BooleanBuilder, Float32Builder, Int64Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder},
    cast::AsArray,
    types::{Float32Type, Int64Type, UInt32Type},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use watchnext_core::{
    Device,
    event::{Event, EventKind, FeatureVector, Vote},
};

use crate::{
    error::{ExportError, LogError},
    join::{JoinOptions, JoinSummary, Joiner, TrainingRow},
};

/// Rows per row group: large enough for good compression and fast scans,
/// small enough that a reader holds one comfortably.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Rows buffered before they become one Arrow record batch.
const WRITE_BATCH_ROWS: usize = 8192;

/// Default number of rows per batch returned by [`TrainingRowReader`].
pub const READ_BATCH_ROWS: usize = 8192;

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// The Arrow schema of training-row files.
pub fn training_row_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("request_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("video_id", DataType::Utf8, false),
        Field::new("query_video_id", DataType::Utf8, true),
        Field::new("device", DataType::Utf8, false),
        Field::new("position", DataType::UInt32, false),
        Field::new("source_names", list_of(DataType::Utf8), false),
        Field::new("source_scores", list_of(DataType::Float32), false),
        Field::new("source_ranks", list_of(DataType::UInt32), false),
        Field::new("feature_schema_hash", DataType::Utf8, true),
        Field::new("features_dense", list_of(DataType::Float32), true),
        Field::new("features_sparse", list_of(DataType::Int64), true),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("experiment_arm", DataType::Utf8, false),
        Field::new("propensity", DataType::Float32, false),
        Field::new("click", DataType::Boolean, false),
        Field::new("watch_seconds", DataType::Float32, false),
        Field::new("video_duration_seconds", DataType::Float32, false),
        Field::new("watch_fraction", DataType::Float32, false),
        Field::new("like", DataType::Boolean, false),
        Field::new("dismiss", DataType::Boolean, false),
        Field::new("rating", DataType::Float32, true),
    ]))
}

/// The Arrow schema of event files.
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("request_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("video_id", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("position", DataType::UInt32, true),
        Field::new("query_video_id", DataType::Utf8, true),
        Field::new("source_names", list_of(DataType::Utf8), true),
        Field::new("source_scores", list_of(DataType::Float32), true),
        Field::new("source_ranks", list_of(DataType::UInt32), true),
        Field::new("feature_schema_hash", DataType::Utf8, true),
        Field::new("features_dense", list_of(DataType::Float32), true),
        Field::new("features_sparse", list_of(DataType::Int64), true),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("experiment_arm", DataType::Utf8, true),
        Field::new("propensity", DataType::Float32, true),
        Field::new("seconds_watched", DataType::Float32, true),
        Field::new("video_duration_seconds", DataType::Float32, true),
        Field::new("rating", DataType::Float32, true),
    ]))
}

pub use watchnext_core::event::{source_from_name, source_name};

// ---------------------------------------------------------------------------
// Crash-safe file

/// Makes temporary names unique within the process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Parquet file being written under a temporary name.
struct ParquetFile {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    writer: Option<ArrowWriter<File>>,
}

impl std::fmt::Debug for ParquetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFile").field("path", &self.path).field("tmp", &self.tmp).finish_non_exhaustive()
    }
}

impl ParquetFile {
    fn create(path: &Path, schema: SchemaRef) -> Result<Self, ExportError> {
        let io_err = |source| ExportError::Io { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let file = File::create(&tmp).map_err(|source| ExportError::Io { path: tmp.clone(), source })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let mut this = Self { path: path.to_path_buf(), tmp, writer: None };
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| this.parquet_err(e))?;
        this.writer = Some(writer);
        Ok(this)
    }

    fn parquet_err(&self, source: ::parquet::errors::ParquetError) -> ExportError {
        ExportError::Parquet { path: self.path.clone(), source }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        let result = match self.writer.as_mut() {
            Some(w) => w.write(batch),
            None => Err(::parquet::errors::ParquetError::General("the file is already finished".into())),
        };
        result.map_err(|e| self.parquet_err(e))
    }

    /// Writes the footer, fsyncs, renames over the target, fsyncs the folder.
    fn commit(&mut self) -> Result<(), ExportError> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        // `into_inner` writes the footer and hands the file back for the fsync.
        let file = writer.into_inner().map_err(|e| self.parquet_err(e))?;
        let io_err = |source| ExportError::Io { path: self.path.clone(), source };
        file.sync_all().map_err(io_err)?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(io_err)?;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        self.tmp.clear();
        Ok(())
    }
}

impl Drop for ParquetFile {
    fn drop(&mut self) {
        // Not committed (an error, or dropped unfinished): leave no temporary file behind.
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

// ---------------------------------------------------------------------------
// Shared column builders

/// `source_names`, `source_scores`, `source_ranks`, the three feature columns.
struct ImpressionDetailBuilders {
    source_names: ListBuilder<StringBuilder>,
    source_scores: ListBuilder<Float32Builder>,
    source_ranks: ListBuilder<UInt32Builder>,
    feature_schema_hash: StringBuilder,
    features_dense: ListBuilder<Float32Builder>,
    features_sparse: ListBuilder<Int64Builder>,
}

impl ImpressionDetailBuilders {
    fn new() -> Self {
        Self {
            source_names: ListBuilder::new(StringBuilder::new()),
            source_scores: ListBuilder::new(Float32Builder::new()),
            source_ranks: ListBuilder::new(UInt32Builder::new()),
            feature_schema_hash: StringBuilder::new(),
            features_dense: ListBuilder::new(Float32Builder::new()),
            features_sparse: ListBuilder::new(Int64Builder::new()),
        }
    }

    fn push(&mut self, sources: Option<&[Vote]>, features: Option<&FeatureVector>) {
        match sources {
            Some(sources) => {
                for vote in sources {
                    self.source_names.values().append_value(source_name(vote.source));
                    self.source_scores.values().append_value(vote.score);
                    self.source_ranks.values().append_value(vote.rank);
                }
                self.source_names.append(true);
                self.source_scores.append(true);
                self.source_ranks.append(true);
            }
            None => {
                self.source_names.append_null();
                self.source_scores.append_null();
                self.source_ranks.append_null();
            }
        }
        match features {
            Some(f) => {
                self.feature_schema_hash.append_value(&f.schema_hash);
                self.features_dense.values().append_slice(&f.dense);
                self.features_dense.append(true);
                self.features_sparse.values().append_slice(&f.sparse);
                self.features_sparse.append(true);
            }
            None => {
                self.feature_schema_hash.append_null();
                self.features_dense.append_null();
                self.features_sparse.append_null();
            }
        }
    }

    /// The six arrays, in schema order.
    fn finish(&mut self) -> [ArrayRef; 6] {
        [
            Arc::new(self.source_names.finish()),
            Arc::new(self.source_scores.finish()),
            Arc::new(self.source_ranks.finish()),
            Arc::new(self.feature_schema_hash.finish()),
            Arc::new(self.features_dense.finish()),
            Arc::new(self.features_sparse.finish()),
        ]
    }
}

// ---------------------------------------------------------------------------
// Training rows: writer

/// Column builders for training rows.
struct TrainingColumns {
    rows: usize,
    timestamp_ms: Int64Builder,
    request_id: StringBuilder,
    user_id: StringBuilder,
    video_id: StringBuilder,
    query_video_id: StringBuilder,
    device: StringBuilder,
    position: UInt32Builder,
    details: ImpressionDetailBuilders,
    model_version: StringBuilder,
    experiment_arm: StringBuilder,
    propensity: Float32Builder,
    click: BooleanBuilder,
    watch_seconds: Float32Builder,
    video_duration_seconds: Float32Builder,
    watch_fraction: Float32Builder,
    like: BooleanBuilder,
    dismiss: BooleanBuilder,
    rating: Float32Builder,
}

impl TrainingColumns {
    fn new() -> Self {
        Self {
            rows: 0,
            timestamp_ms: Int64Builder::new(),
            request_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            video_id: StringBuilder::new(),
            query_video_id: StringBuilder::new(),
            device: StringBuilder::new(),
            position: UInt32Builder::new(),
            details: ImpressionDetailBuilders::new(),
            model_version: StringBuilder::new(),
            experiment_arm: StringBuilder::new(),
            propensity: Float32Builder::new(),
            click: BooleanBuilder::new(),
            watch_seconds: Float32Builder::new(),
            video_duration_seconds: Float32Builder::new(),
            watch_fraction: Float32Builder::new(),
            like: BooleanBuilder::new(),
            dismiss: BooleanBuilder::new(),
            rating: Float32Builder::new(),
        }
    }

    fn push(&mut self, r: &TrainingRow) {
        self.rows += 1;
        self.timestamp_ms.append_value(r.timestamp_ms);
        self.request_id.append_value(&r.request_id);
        self.user_id.append_value(&r.user_id);
        self.video_id.append_value(&r.video_id);
        self.query_video_id.append_option(r.query_video_id.as_deref());
        self.device.append_value(r.device.name());
        self.position.append_value(r.position);
        self.details.push(Some(&r.sources), r.features.as_ref());
        self.model_version.append_value(&r.model_version);
        self.experiment_arm.append_value(&r.experiment_arm);
        self.propensity.append_value(r.propensity);
        self.click.append_value(r.click);
        self.watch_seconds.append_value(r.watch_seconds);
        self.video_duration_seconds.append_value(r.video_duration_seconds);
        self.watch_fraction.append_value(r.watch_fraction);
        self.like.append_value(r.like);
        self.dismiss.append_value(r.dismiss);
        self.rating.append_option(r.rating);
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows = 0;
        let [source_names, source_scores, source_ranks, feature_schema_hash, features_dense, features_sparse] =
            self.details.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp_ms.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.video_id.finish()),
            Arc::new(self.query_video_id.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.position.finish()),
            source_names,
            source_scores,
            source_ranks,
            feature_schema_hash,
            features_dense,
            features_sparse,
            Arc::new(self.model_version.finish()),
            Arc::new(self.experiment_arm.finish()),
            Arc::new(self.propensity.finish()),
            Arc::new(self.click.finish()),
            Arc::new(self.watch_seconds.finish()),
            Arc::new(self.video_duration_seconds.finish()),
            Arc::new(self.watch_fraction.finish()),
            Arc::new(self.like.finish()),
            Arc::new(self.dismiss.finish()),
            Arc::new(self.rating.finish()),
        ];
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}

/// Column builders that turn buffered rows into one record batch.
trait BatchColumns {
    /// Rows buffered since the last batch.
    fn buffered(&self) -> usize;
    /// The buffered rows as a batch; the builders start empty again.
    fn take_batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError>;
}

impl BatchColumns for TrainingColumns {
    fn buffered(&self) -> usize {
        self.rows
    }

    fn take_batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.finish(schema)
    }
}

impl BatchColumns for EventColumns {
    fn buffered(&self) -> usize {
        self.rows
    }

    fn take_batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.finish(schema)
    }
}

/// A Parquet file written in batches of [`WRITE_BATCH_ROWS`] rows, made
/// durable (fsync + rename) only by [`BatchedWriter::finish`].
#[derive(Debug)]
struct BatchedWriter<C> {
    file: ParquetFile,
    schema: SchemaRef,
    columns: C,
    /// Rows written so far.
    rows: u64,
}

impl<C: BatchColumns> BatchedWriter<C> {
    fn create(path: &Path, schema: SchemaRef, columns: C) -> Result<Self, ExportError> {
        let file = ParquetFile::create(path, Arc::clone(&schema))?;
        Ok(Self { file, schema, columns, rows: 0 })
    }

    /// Counts the row just pushed into the columns; writes a full batch.
    fn pushed(&mut self) -> Result<(), ExportError> {
        self.rows += 1;
        if self.columns.buffered() >= WRITE_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if self.columns.buffered() == 0 {
            return Ok(());
        }
        let batch = self
            .columns
            .take_batch(&self.schema)
            .map_err(|source| ExportError::Arrow { path: self.file.path.clone(), source })?;
        self.file.write(&batch)
    }

    fn finish(mut self) -> Result<u64, ExportError> {
        self.flush()?;
        self.file.commit()?;
        Ok(self.rows)
    }
}

/// Writes training rows to a Parquet file; the file appears (whole) only on
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct TrainingRowWriter {
    inner: BatchedWriter<TrainingColumns>,
}

impl std::fmt::Debug for TrainingColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingColumns").field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl TrainingRowWriter {
    pub fn create(path: impl AsRef<Path>) -> Result<Self, ExportError> {
        Ok(Self { inner: BatchedWriter::create(path.as_ref(), training_row_schema(), TrainingColumns::new())? })
    }

    pub fn write(&mut self, row: &TrainingRow) -> Result<(), ExportError> {
        self.inner.columns.push(row);
        self.inner.pushed()
    }

    /// Writes what is buffered, makes the file durable and returns the number of rows.
    pub fn finish(self) -> Result<u64, ExportError> {
        self.inner.finish()
    }
}

/// Joins `events` (see [`crate::join`]) straight into a training-row file,
/// holding only the join's pending rows and one write batch in memory.
pub fn write_training_set(
    events: impl IntoIterator<Item = Result<(u64, Event), LogError>>,
    path: impl AsRef<Path>,
    options: JoinOptions,
) -> Result<JoinSummary, ExportError> {
    let mut writer = TrainingRowWriter::create(path)?;
    let mut joiner = Joiner::new(options);
    let mut emit = |row: TrainingRow| writer.write(&row);
    for item in events {
        let (_, event) = item?;
        joiner.push(event, &mut emit)?;
    }
    let summary = joiner.finish(&mut emit)?;
    writer.finish()?;
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Training rows: reader

/// Training-row columns a file may lack (written by an older version).
const OPTIONAL_TRAINING_COLUMNS: [&str; 1] = ["source_ranks"];

/// Reads a training-row file back in batches of rows, one record batch at a
/// time (memory: one batch plus the Parquet reader's row-group buffers).
pub struct TrainingRowReader {
    path: PathBuf,
    batches: ParquetRecordBatchReader,
    /// Rows in the file, from its footer.
    rows: u64,
}

impl std::fmt::Debug for TrainingRowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingRowReader").field("path", &self.path).field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl TrainingRowReader {
    /// Opens `path` and checks that it has every training-row column with
    /// the right type; batches hold up to `batch_rows` rows ([`READ_BATCH_ROWS`] is a good default).
    pub fn open(path: impl AsRef<Path>, batch_rows: usize) -> Result<Self, ExportError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| ExportError::Io { path: path.clone(), source })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|source| ExportError::Parquet { path: path.clone(), source })?;
        let found = builder.schema();
        for want in training_row_schema().fields() {
            let problem = match found.field_with_name(want.name()) {
                Err(_) if OPTIONAL_TRAINING_COLUMNS.contains(&want.name().as_str()) => None,
                Err(_) => Some(format!("column `{}` is missing", want.name())),
                Ok(have) if !same_type(have.data_type(), want.data_type()) => {
                    Some(format!("column `{}` is {}, expected {}", want.name(), have.data_type(), want.data_type()))
                }
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                return Err(ExportError::NotTrainingRows { path, problem });
            }
        }
        let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let batches = builder
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|source| ExportError::Parquet { path: path.clone(), source })?;
        Ok(Self { path, batches, rows })
    }

    /// Rows in the file.
    pub fn num_rows(&self) -> u64 {
        self.rows
    }
}

impl Iterator for TrainingRowReader {
    type Item = Result<Vec<TrainingRow>, ExportError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.batches.next()? {
            Ok(batch) => batch,
            Err(source) => return Some(Err(ExportError::Arrow { path: self.path.clone(), source })),
        };
        Some(
            rows_from_batch(&batch)
                .map_err(|problem| ExportError::NotTrainingRows { path: self.path.clone(), problem }),
        )
    }
}

/// Reads a whole training-row file into memory (tests, small files).
pub fn read_training_rows(path: impl AsRef<Path>) -> Result<Vec<TrainingRow>, ExportError> {
    let mut rows = Vec::new();
    for batch in TrainingRowReader::open(path, READ_BATCH_ROWS)? {
        rows.extend(batch?);
    }
    Ok(rows)
}

/// Types match, ignoring the name and nullability of list items (other
/// writers name them differently).
fn same_type(have: &DataType, want: &DataType) -> bool {
    match (have, want) {
        (DataType::List(h), DataType::List(w)) => h.data_type() == w.data_type(),
        _ => have == want,
    }
}

/// Typed access to a record batch's columns; errors name the column.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get(&self, name: &str) -> Result<&'a ArrayRef, String> {
        self.0.column_by_name(name).ok_or_else(|| format!("column `{name}` is missing"))
    }
    fn wrong(name: &str, what: &str) -> String {
        format!("column `{name}` is not {what}")
    }
    fn strings(&self, name: &str) -> Result<&'a StringArray, String> {
        self.get(name)?.as_string_opt::<i32>().ok_or_else(|| Self::wrong(name, "utf8"))
    }
    fn i64s(&self, name: &str) -> Result<&'a Int64Array, String> {
        self.get(name)?.as_primitive_opt::<Int64Type>().ok_or_else(|| Self::wrong(name, "int64"))
    }
    fn u32s(&self, name: &str) -> Result<&'a UInt32Array, String> {
        self.get(name)?.as_primitive_opt::<UInt32Type>().ok_or_else(|| Self::wrong(name, "uint32"))
    }
    fn f32s(&self, name: &str) -> Result<&'a Float32Array, String> {
        self.get(name)?.as_primitive_opt::<Float32Type>().ok_or_else(|| Self::wrong(name, "float32"))
    }
    fn bools(&self, name: &str) -> Result<&'a BooleanArray, String> {
        self.get(name)?.as_boolean_opt().ok_or_else(|| Self::wrong(name, "boolean"))
    }
    fn lists(&self, name: &str) -> Result<&'a GenericListArray<i32>, String> {
        self.get(name)?.as_list_opt::<i32>().ok_or_else(|| Self::wrong(name, "a list"))
    }
}

fn opt_string(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_owned())
}

fn list_values<T: arrow_array::ArrowPrimitiveType>(
    a: &GenericListArray<i32>,
    i: usize,
    name: &str,
) -> Result<Vec<T::Native>, String> {
    let values = a.value(i);
    let values =
        values.as_primitive_opt::<T>().ok_or_else(|| format!("column `{name}` has items of the wrong type"))?;
    Ok(values.values().to_vec())
}

fn rows_from_batch(batch: &RecordBatch) -> Result<Vec<TrainingRow>, String> {
    let c = Columns(batch);
    let timestamp_ms = c.i64s("timestamp_ms")?;
    let request_id = c.strings("request_id")?;
    let user_id = c.strings("user_id")?;
    let video_id = c.strings("video_id")?;
    let query_video_id = c.strings("query_video_id")?;
    let device = c.strings("device")?;
    let position = c.u32s("position")?;
    let source_names = c.lists("source_names")?;
    let source_scores = c.lists("source_scores")?;
    let source_ranks = batch.column_by_name("source_ranks").map(|_| c.lists("source_ranks")).transpose()?;
    let feature_schema_hash = c.strings("feature_schema_hash")?;
    let features_dense = c.lists("features_dense")?;
    let features_sparse = c.lists("features_sparse")?;
    let model_version = c.strings("model_version")?;
    let experiment_arm = c.strings("experiment_arm")?;
    let propensity = c.f32s("propensity")?;
    let click = c.bools("click")?;
    let watch_seconds = c.f32s("watch_seconds")?;
    let video_duration_seconds = c.f32s("video_duration_seconds")?;
    let watch_fraction = c.f32s("watch_fraction")?;
    let like = c.bools("like")?;
    let dismiss = c.bools("dismiss")?;
    let rating = c.f32s("rating")?;

    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let device_name = device.value(i);
        let device = Device::ALL
            .into_iter()
            .find(|d| d.name() == device_name)
            .ok_or_else(|| format!("row {i}: unknown device `{device_name}`"))?;
        let names = source_names.value(i);
        let names = names.as_string_opt::<i32>().ok_or("column `source_names` does not hold strings")?;
        let scores = list_values::<Float32Type>(source_scores, i, "source_scores")?;
        if names.len() != scores.len() {
            return Err(format!("row {i}: {} source names but {} scores", names.len(), scores.len()));
        }
        let ranks = match source_ranks {
            Some(ranks) if ranks.is_valid(i) => list_values::<UInt32Type>(ranks, i, "source_ranks")?,
            _ => vec![0; names.len()],
        };
        if ranks.len() != names.len() {
            return Err(format!("row {i}: {} source names but {} ranks", names.len(), ranks.len()));
        }
        let mut sources = Vec::with_capacity(names.len());
        for ((name, score), rank) in names.iter().zip(scores).zip(ranks) {
            let name = name.unwrap_or_default();
            let source = source_from_name(name).ok_or_else(|| format!("row {i}: unknown candidate source `{name}`"))?;
            sources.push(Vote::new(source, score, rank));
        }
        let features = if features_dense.is_valid(i) {
            Some(FeatureVector {
                schema_hash: opt_string(feature_schema_hash, i).unwrap_or_default(),
                dense: list_values::<Float32Type>(features_dense, i, "features_dense")?,
                sparse: if features_sparse.is_valid(i) {
                    list_values::<Int64Type>(features_sparse, i, "features_sparse")?
                } else {
                    Vec::new()
                },
            })
        } else {
            None
        };
        rows.push(TrainingRow {
            timestamp_ms: timestamp_ms.value(i),
            request_id: request_id.value(i).to_owned(),
            user_id: user_id.value(i).to_owned(),
            video_id: video_id.value(i).to_owned(),
            query_video_id: opt_string(query_video_id, i),
            device,
            position: position.value(i),
            sources,
            features,
            model_version: model_version.value(i).to_owned(),
            experiment_arm: experiment_arm.value(i).to_owned(),
            propensity: propensity.value(i),
            click: click.value(i),
            watch_seconds: watch_seconds.value(i),
            video_duration_seconds: video_duration_seconds.value(i),
            watch_fraction: watch_fraction.value(i),
            like: like.value(i),
            dismiss: dismiss.value(i),
            rating: rating.is_valid(i).then(|| rating.value(i)),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Raw events

/// Column builders for events.
struct EventColumns {
    rows: usize,
    seq: UInt64Builder,
    timestamp_ms: Int64Builder,
    kind: StringBuilder,
    request_id: StringBuilder,
    user_id: StringBuilder,
    video_id: StringBuilder,
    device: StringBuilder,
    position: UInt32Builder,
    query_video_id: StringBuilder,
    details: ImpressionDetailBuilders,
    model_version: StringBuilder,
    experiment_arm: StringBuilder,
    propensity: Float32Builder,
    seconds_watched: Float32Builder,
    video_duration_seconds: Float32Builder,
    rating: Float32Builder,
}

impl EventColumns {
    fn new() -> Self {
        Self {
            rows: 0,
            seq: UInt64Builder::new(),
            timestamp_ms: Int64Builder::new(),
            kind: StringBuilder::new(),
            request_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            video_id: StringBuilder::new(),
            device: StringBuilder::new(),
            position: UInt32Builder::new(),
            query_video_id: StringBuilder::new(),
            details: ImpressionDetailBuilders::new(),
            model_version: StringBuilder::new(),
            experiment_arm: StringBuilder::new(),
            propensity: Float32Builder::new(),
            seconds_watched: Float32Builder::new(),
            video_duration_seconds: Float32Builder::new(),
            rating: Float32Builder::new(),
        }
    }

    fn push(&mut self, seq: u64, e: &Event) {
        self.rows += 1;
        self.seq.append_value(seq);
        self.timestamp_ms.append_value(e.timestamp_ms);
        self.kind.append_value(e.kind.name());
        self.request_id.append_value(&e.request_id);
        self.user_id.append_value(e.user.as_str());
        self.video_id.append_value(e.video.as_str());
        self.device.append_value(e.device.name());
        let imp = match &e.kind {
            EventKind::Impression(imp) => Some(imp),
            _ => None,
        };
        self.position.append_option(imp.map(|i| i.position));
        self.query_video_id.append_option(imp.and_then(|i| i.query_video.as_ref()).map(|v| v.as_str()));
        self.details.push(imp.map(|i| i.sources.as_slice()), imp.and_then(|i| i.features.as_ref()));
        self.model_version.append_option(imp.map(|i| &i.model_version));
        self.experiment_arm.append_option(imp.map(|i| &i.experiment_arm));
        self.propensity.append_option(imp.map(|i| i.propensity));
        let (seconds, duration) = match e.kind {
            EventKind::Watch { seconds_watched, video_duration_seconds } => {
                (Some(seconds_watched), Some(video_duration_seconds))
            }
            _ => (None, None),
        };
        self.seconds_watched.append_option(seconds);
        self.video_duration_seconds.append_option(duration);
        self.rating.append_option(match e.kind {
            EventKind::Rating { value } => Some(value),
            _ => None,
        });
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows = 0;
        let [source_names, source_scores, source_ranks, feature_schema_hash, features_dense, features_sparse] =
            self.details.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.timestamp_ms.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.video_id.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.query_video_id.finish()),
            source_names,
            source_scores,
            source_ranks,
            feature_schema_hash,
            features_dense,
            features_sparse,
            Arc::new(self.model_version.finish()),
            Arc::new(self.experiment_arm.finish()),
            Arc::new(self.propensity.finish()),
            Arc::new(self.seconds_watched.finish()),
            Arc::new(self.video_duration_seconds.finish()),
            Arc::new(self.rating.finish()),
        ];
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}

impl std::fmt::Debug for EventColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventColumns").field("rows", &self.rows).finish_non_exhaustive()
    }
}

/// Writes events (one row each) to a Parquet file; the file appears
/// (whole) only on [`finish`](Self::finish).
#[derive(Debug)]
pub struct EventParquetWriter {
    inner: BatchedWriter<EventColumns>,
}

impl EventParquetWriter {
    pub fn create(path: impl AsRef<Path>) -> Result<Self, ExportError> {
        Ok(Self { inner: BatchedWriter::create(path.as_ref(), event_schema(), EventColumns::new())? })
    }

    pub fn write(&mut self, seq: u64, event: &Event) -> Result<(), ExportError> {
        self.inner.columns.push(seq, event);
        self.inner.pushed()
    }

    /// Writes what is buffered, makes the file durable and returns the number of rows.
    pub fn finish(self) -> Result<u64, ExportError> {
        self.inner.finish()
    }
}

/// Exports a stream of logged events (a [`LogReader`](crate::log::LogReader))
/// to a Parquet file; returns the number of rows.
pub fn export_events(
    events: impl IntoIterator<Item = Result<(u64, Event), LogError>>,
    path: impl AsRef<Path>,
) -> Result<u64, ExportError> {
    let mut writer = EventParquetWriter::create(path)?;
    for item in events {
        let (seq, event) = item?;
        writer.write(seq, &event)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use watchnext_core::{
        UserId, VideoId,
        event::{Impression, Source},
    };

    use super::*;

    fn row(i: usize) -> TrainingRow {
        TrainingRow {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            request_id: format!("r{}", i / 10),
            user_id: format!("u{}", i % 7),
            video_id: format!("v{i}"),
            query_video_id: (!i.is_multiple_of(3)).then(|| format!("q{i}")),
            device: Device::ALL[i % Device::ALL.len()],
            position: (i % 10) as u32 + 1,
            sources: (0..i % 3)
                .map(|k| Vote::new([Source::Topic, Source::Cowatch][k % 2], k as f32 * 0.5, k as u32))
                .collect(),
            features: (!i.is_multiple_of(4)).then(|| FeatureVector {
                schema_hash: "abc".into(),
                dense: vec![i as f32, 0.5],
                sparse: vec![i as i64, -1, 7],
            }),
            model_version: "m3".into(),
            experiment_arm: if i.is_multiple_of(2) { "control" } else { "treatment" }.into(),
            propensity: 0.25,
            click: i.is_multiple_of(2),
            watch_seconds: i as f32,
            video_duration_seconds: 100.0,
            watch_fraction: (i as f32 / 100.0).min(1.0),
            like: i.is_multiple_of(5),
            dismiss: i.is_multiple_of(11),
            rating: i.is_multiple_of(6).then_some(i as f32 / 10.0),
        }
    }

    #[test]
    fn training_rows_round_trip_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rows.parquet");
        let rows: Vec<_> = (0..20_000).map(row).collect();
        let mut w = TrainingRowWriter::create(&path).unwrap();
        for r in &rows {
            w.write(r).unwrap();
        }
        assert!(!path.exists(), "the file appears only on finish");
        assert_eq!(w.finish().unwrap(), 20_000);

        let reader = TrainingRowReader::open(&path, 5000).unwrap();
        assert_eq!(reader.num_rows(), 20_000);
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 4);
        assert!(batches.iter().all(|b| b.len() == 5000));
        let back: Vec<_> = batches.into_iter().flatten().collect();
        assert_eq!(back, rows);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["rows.parquet"], "no temporary file left behind");
    }

    #[test]
    fn a_training_set_is_joined_straight_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = crate::log::FeedbackLog::open(dir.path().join("log"), Default::default()).unwrap();
        let ev = |t: i64, video: &str, kind: EventKind| Event {
            timestamp_ms: t,
            request_id: "r1".into(),
            user: UserId::parse("u", "u1").unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Desktop,
            kind,
        };
        let imp = |position| {
            EventKind::Impression(Impression {
                position,
                query_video: None,
                sources: vec![Vote::new(Source::Context, 0.1, 1)],
                features: None,
                model_version: "m".into(),
                experiment_arm: "a".into(),
                propensity: 0.0,
            })
        };
        log.append_blocking(vec![ev(0, "a", imp(1)), ev(0, "b", imp(2))]).unwrap();
        log.append_blocking(vec![
            ev(5, "b", EventKind::Watch { seconds_watched: 30.0, video_duration_seconds: 60.0 }),
            ev(6, "c", EventKind::Click),
        ])
        .unwrap();
        let path = dir.path().join("train.parquet");
        let summary = write_training_set(log.reader(1).unwrap(), &path, JoinOptions::default()).unwrap();
        assert_eq!((summary.rows, summary.matched_outcomes, summary.unmatched_outcomes), (2, 1, 1));
        let rows = read_training_rows(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].video_id.as_str(), rows[1].click, rows[1].watch_fraction), ("b", true, 0.5));
        assert_eq!(
            (rows[0].device, rows[0].features.as_ref(), rows[0].query_video_id.as_ref()),
            (Device::Desktop, None, None)
        );
    }

    #[test]
    fn a_file_written_before_ranks_were_kept_reads_with_unknown_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let (path, old) = (dir.path().join("new.parquet"), dir.path().join("old.parquet"));
        let rows: Vec<_> = (0..50).map(row).collect();
        let mut w = TrainingRowWriter::create(&path).unwrap();
        rows.iter().for_each(|r| w.write(r).unwrap());
        w.finish().unwrap();
        // The same file without the `source_ranks` column, as an older version wrote it.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let keep: Vec<usize> =
            (0..batches[0].num_columns()).filter(|&i| batches[0].schema().field(i).name() != "source_ranks").collect();
        let projected: Vec<RecordBatch> = batches.iter().map(|b| b.project(&keep).unwrap()).collect();
        let mut writer = ArrowWriter::try_new(File::create(&old).unwrap(), projected[0].schema(), None).unwrap();
        projected.iter().for_each(|b| writer.write(b).unwrap());
        writer.close().unwrap();

        let back = read_training_rows(&old).unwrap();
        let unranked: Vec<TrainingRow> = rows
            .into_iter()
            .map(|mut r| {
                r.sources.iter_mut().for_each(|v| v.rank = 0);
                r
            })
            .collect();
        assert_eq!(back, unranked);
        assert!(back.iter().any(|r| !r.sources.is_empty()));
    }

    #[test]
    fn an_empty_training_set_is_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.parquet");
        assert_eq!(TrainingRowWriter::create(&path).unwrap().finish().unwrap(), 0);
        assert!(read_training_rows(&path).unwrap().is_empty());
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let mut w = TrainingRowWriter::create(&path).unwrap();
        w.write(&row(1)).unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn other_files_are_rejected_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        export_events(Vec::new(), &path).unwrap();
        let err = TrainingRowReader::open(&path, 10).unwrap_err().to_string();
        assert!(err.contains("not a training-row file") && err.contains("column `click` is missing"), "{err}");

        let junk = dir.path().join("junk.parquet");
        fs::write(&junk, b"not parquet at all").unwrap();
        assert!(matches!(TrainingRowReader::open(&junk, 10), Err(ExportError::Parquet { .. })));
        assert!(matches!(TrainingRowReader::open(dir.path().join("nope"), 10), Err(ExportError::Io { .. })));
    }

    #[test]
    fn events_export_one_row_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        let user = UserId::parse("u", "u1").unwrap();
        let video = VideoId::parse("v", "v1").unwrap();
        let kinds = [
            EventKind::Impression(Impression {
                position: 2,
                query_video: None,
                sources: vec![Vote::new(Source::Sequence, 1.5, 2)],
                features: Some(FeatureVector { schema_hash: "h".into(), dense: vec![1.0], sparse: vec![2, 3] }),
                model_version: "m".into(),
                experiment_arm: "a".into(),
                propensity: 0.1,
            }),
            EventKind::Click,
            EventKind::Watch { seconds_watched: 12.0, video_duration_seconds: 60.0 },
            EventKind::Like,
            EventKind::Dismiss,
            EventKind::Rating { value: 4.0 },
        ];
        let n = 10_000u64;
        let events = (0..n).map(|i| {
            Ok((
                i + 1,
                Event {
                    timestamp_ms: i as i64,
                    request_id: if i % 2 == 0 { "r".into() } else { String::new() },
                    user: user.clone(),
                    video: video.clone(),
                    device: Device::Tv,
                    kind: kinds[i as usize % kinds.len()].clone(),
                },
            ))
        });
        assert_eq!(export_events(events, &path).unwrap(), n);

        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), n as usize);
        let first = &batches[0];
        assert_eq!(first.schema().fields().len(), event_schema().fields().len());
        let c = Columns(first);
        assert_eq!(c.get("seq").unwrap().as_primitive::<arrow_array::types::UInt64Type>().value(9), 10);
        assert_eq!(c.strings("kind").unwrap().value(2), "watch");
        assert_eq!(c.f32s("seconds_watched").unwrap().value(2), 12.0);
        assert!(c.f32s("seconds_watched").unwrap().is_null(1));
        assert_eq!(c.u32s("position").unwrap().value(0), 2);
        assert!(c.u32s("position").unwrap().is_null(1));
        assert_eq!(list_values::<Int64Type>(c.lists("features_sparse").unwrap(), 0, "x").unwrap(), [2, 3]);
        assert_eq!(c.f32s("rating").unwrap().value(5), 4.0);
        assert_eq!(c.strings("device").unwrap().value(0), "tv");
    }
}
