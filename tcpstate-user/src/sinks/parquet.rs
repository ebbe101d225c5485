//! Parquet export of transitions, with the `parquet` crate's low-level
//! column writers (no Arrow).
//!
//! The schema is derived from [`COLUMNS`]: strings are `BYTE_ARRAY (STRING)`,
//! `u64` is `INT64 (INTEGER(64,false))`, `u32`/`u16` are `INT32
//! (INTEGER(32|16,false))` (the legacy `UINT_*` converted types are set too),
//! `f64` is `DOUBLE`; `Option` fields are `OPTIONAL`, the others `REQUIRED`.
//! Unsigned values are stored with their bits unchanged, as the format
//! requires: a netns inode above `i32::MAX` reads back correctly through the
//! unsigned annotation. Pages are Snappy-compressed.
//!
//! Rows are buffered column by column and written as row groups of
//! [`ROW_GROUP_ROWS`] rows. The file is only valid once
//! [`ParquetSink::finish`] has written its footer.
use super::csv::{ColumnType, Value, COLUMNS};
use crate::views::trace::TransitionRecord;
use bytes::Bytes;
use parquet::{
    basic::{Compression, LogicalType, Repetition, Type as PhysicalType},
    data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type},
    errors::ParquetError,
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::types::{Type, TypePtr},
};
use std::{
    io::{self, Write},
    sync::Arc,
};

/// Rows per row group (the last one may be shorter).
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Name of the Parquet schema's root (message) type.
pub const MESSAGE_NAME: &str = "transition";

/// Writes transitions as one Parquet file.
pub struct ParquetSink<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    buffers: Vec<ColumnBuffer>,
    rows: usize,
    row_group_rows: usize,
}

impl<W: Write + Send> ParquetSink<W> {
    /// Starts the file (writes its magic number).
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_row_group_rows(out, ROW_GROUP_ROWS)
    }

    /// As [`ParquetSink::new`], with row groups of `rows` rows (at least 1).
    pub fn with_row_group_rows(out: W, rows: usize) -> io::Result<Self> {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = SerializedFileWriter::new(out, schema().map_err(io_error)?, Arc::new(props))
            .map_err(io_error)?;
        Ok(Self {
            writer,
            buffers: COLUMNS.iter().map(|c| ColumnBuffer::new(c.ty)).collect(),
            rows: 0,
            row_group_rows: rows.max(1),
        })
    }

    /// Buffers one row; writes a row group when enough are buffered.
    pub fn write(&mut self, record: &TransitionRecord) -> io::Result<()> {
        for (column, buffer) in COLUMNS.iter().zip(&mut self.buffers) {
            let value = (column.get)(record);
            // A REQUIRED column's getter never returns Null (it reads a
            // non-`Option` field; a csv.rs test checks the table).
            debug_assert!(column.nullable || value != Value::Null, "{}", column.name);
            if column.nullable {
                buffer.def_levels.push(i16::from(value != Value::Null));
            }
            buffer.push(value);
        }
        self.rows += 1;
        if self.rows >= self.row_group_rows {
            self.flush_row_group().map_err(io_error)?;
        }
        Ok(())
    }

    /// Writes the buffered rows and the footer, flushes, and returns the
    /// writer. With no rows at all this is a valid file with the schema and
    /// no row group.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_row_group().map_err(io_error)?;
        let mut out = self.writer.into_inner().map_err(io_error)?;
        out.flush()?;
        Ok(out)
    }

    fn flush_row_group(&mut self) -> Result<(), ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut row_group = self.writer.next_row_group()?;
        for (column, buffer) in COLUMNS.iter().zip(&mut self.buffers) {
            let mut writer = row_group
                .next_column()?
                .ok_or_else(|| ParquetError::General("schema has too few columns".into()))?;
            let defs = column.nullable.then_some(&buffer.def_levels[..]);
            match &mut buffer.values {
                Values::Str { data, ends } => {
                    let data = Bytes::from(std::mem::take(data));
                    let mut start = 0;
                    let values: Vec<ByteArray> = ends
                        .iter()
                        .map(|&end| {
                            let value = ByteArray::from(data.slice(start..end));
                            start = end;
                            value
                        })
                        .collect();
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(&values, defs, None)?;
                }
                Values::I32(v) => {
                    writer.typed::<Int32Type>().write_batch(v, defs, None)?;
                }
                Values::I64(v) => {
                    writer.typed::<Int64Type>().write_batch(v, defs, None)?;
                }
                Values::F64(v) => {
                    writer.typed::<DoubleType>().write_batch(v, defs, None)?;
                }
            }
            writer.close()?;
            buffer.clear();
        }
        if row_group.next_column()?.is_some() {
            return Err(ParquetError::General("schema has too many columns".into()));
        }
        row_group.close()?;
        self.rows = 0;
        Ok(())
    }
}

/// The Parquet schema of the export, derived from [`COLUMNS`].
pub fn schema() -> Result<TypePtr, ParquetError> {
    let fields = COLUMNS
        .iter()
        .map(|column| {
            let (physical, logical) = match column.ty {
                ColumnType::Str => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                ColumnType::U16 => (PhysicalType::INT32, Some(LogicalType::integer(16, false))),
                ColumnType::U32 => (PhysicalType::INT32, Some(LogicalType::integer(32, false))),
                ColumnType::U64 => (PhysicalType::INT64, Some(LogicalType::integer(64, false))),
                ColumnType::F64 => (PhysicalType::DOUBLE, None),
            };
            let repetition = if column.nullable {
                Repetition::OPTIONAL
            } else {
                Repetition::REQUIRED
            };
            Type::primitive_type_builder(column.name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(
        Type::group_type_builder(MESSAGE_NAME)
            .with_fields(fields)
            .build()?,
    ))
}

/// Keeps the `io::ErrorKind` of an I/O error that the writer passed on
/// (a closed pipe stays `BrokenPipe`).
fn io_error(e: ParquetError) -> io::Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(e) => *e,
            Err(inner) => io::Error::other(inner),
        },
        e => io::Error::other(e),
    }
}

/// The buffered values of one column (non-null only) and, for a nullable
/// column, one definition level per row (1 = value present, 0 = null).
struct ColumnBuffer {
    values: Values,
    def_levels: Vec<i16>,
}

enum Values {
    /// All strings back to back; `ends[i]` is where string `i` ends.
    Str {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
    /// u16 and u32, bits unchanged.
    I32(Vec<i32>),
    /// u64, bits unchanged.
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl ColumnBuffer {
    fn new(ty: ColumnType) -> Self {
        let values = match ty {
            ColumnType::Str => Values::Str {
                data: Vec::new(),
                ends: Vec::new(),
            },
            ColumnType::U16 | ColumnType::U32 => Values::I32(Vec::new()),
            ColumnType::U64 => Values::I64(Vec::new()),
            ColumnType::F64 => Values::F64(Vec::new()),
        };
        Self {
            values,
            def_levels: Vec::new(),
        }
    }

    fn push(&mut self, value: Value<'_>) {
        match (&mut self.values, value) {
            (_, Value::Null) => {}
            (Values::Str { data, ends }, Value::Str(s)) => {
                data.extend_from_slice(s.as_bytes());
                ends.push(data.len());
            }
            (Values::I32(v), Value::U16(x)) => v.push(i32::from(x)),
            (Values::I32(v), Value::U32(x)) => v.push(x as i32),
            (Values::I64(v), Value::U64(x)) => v.push(x as i64),
            (Values::F64(v), Value::F64(x)) => v.push(x),
            (_, value) => unreachable!("COLUMNS getter returned {value:?} for another type"),
        }
    }

    fn clear(&mut self) {
        self.def_levels.clear();
        match &mut self.values {
            Values::Str { data, ends } => {
                data.clear();
                ends.clear();
            }
            Values::I32(v) => v.clear(),
            Values::I64(v) => v.clear(),
            Values::F64(v) => v.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::csv::tests::{full_record, sparse_record};
    use parquet::{
        file::{
            reader::{FileReader, SerializedFileReader},
            statistics::Statistics,
        },
        record::Field,
        schema::parser::parse_message_type,
    };

    /// The schema as a Parquet message type, written out by hand.
    const MESSAGE: &str = "
        message transition {
            REQUIRED BYTE_ARRAY time (STRING);
            REQUIRED INT64 ts_boot_ns (INTEGER(64,false));
            OPTIONAL INT64 connection_id (INTEGER(64,false));
            REQUIRED BYTE_ARRAY skaddr (STRING);
            REQUIRED INT32 netns (INTEGER(32,false));
            REQUIRED BYTE_ARRAY family (STRING);
            REQUIRED BYTE_ARRAY laddr (STRING);
            REQUIRED INT32 lport (INTEGER(16,false));
            REQUIRED BYTE_ARRAY raddr (STRING);
            REQUIRED INT32 rport (INTEGER(16,false));
            REQUIRED BYTE_ARRAY old (STRING);
            REQUIRED BYTE_ARRAY new (STRING);
            OPTIONAL DOUBLE old_state_ms;
            OPTIONAL INT32 owner_tgid (INTEGER(32,false));
            OPTIONAL INT32 owner_pid (INTEGER(32,false));
            OPTIONAL BYTE_ARRAY owner_comm (STRING);
            OPTIONAL BYTE_ARRAY owner_how (STRING);
            OPTIONAL INT64 owner_cgroup_id (INTEGER(64,false));
            REQUIRED INT32 ctx_pid (INTEGER(32,false));
            REQUIRED INT32 ctx_tgid (INTEGER(32,false));
            REQUIRED BYTE_ARRAY ctx_comm (STRING);
            REQUIRED INT32 cpu (INTEGER(32,false));
        }";

    fn expected_field(value: Value<'_>) -> Field {
        match value {
            Value::Null => Field::Null,
            Value::Str(s) => Field::Str(s.to_string()),
            Value::U16(v) => Field::UShort(v),
            Value::U32(v) => Field::UInt(v),
            Value::U64(v) => Field::ULong(v),
            Value::F64(v) => Field::Double(v),
        }
    }

    fn export(records: &[TransitionRecord], row_group_rows: usize) -> Vec<u8> {
        let mut sink = ParquetSink::with_row_group_rows(Vec::new(), row_group_rows).unwrap();
        for r in records {
            sink.write(r).unwrap();
        }
        sink.finish().unwrap()
    }

    fn read_back(file: Vec<u8>, expected: &[TransitionRecord]) -> SerializedFileReader<Bytes> {
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let metadata = reader.metadata().file_metadata();
        assert_eq!(metadata.num_rows(), expected.len() as i64);
        assert_eq!(*metadata.schema(), *schema().unwrap());
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap())
            .collect();
        assert_eq!(rows.len(), expected.len());
        for (i, (row, record)) in rows.iter().zip(expected).enumerate() {
            let fields: Vec<(&String, &Field)> = row.get_column_iter().collect();
            assert_eq!(fields.len(), COLUMNS.len());
            for ((name, field), column) in fields.into_iter().zip(COLUMNS) {
                assert_eq!(name, column.name);
                assert_eq!(
                    *field,
                    expected_field((column.get)(record)),
                    "row {i} column {name}"
                );
            }
        }
        reader
    }

    fn three_records() -> Vec<TransitionRecord> {
        vec![
            full_record(),
            sparse_record(),
            TransitionRecord {
                owner_comm: Some("Ünïcødé ✓ 日本語,\"q\"\n".into()),
                ctx_comm: "".into(),
                family: "ipv6",
                laddr: "::1".into(),
                raddr: "fe80::1".into(),
                netns: u32::MAX,
                ts_boot_ns: u64::MAX,
                connection_id: Some(u64::MAX - 1),
                lport: 0,
                rport: u16::MAX,
                old_state_ms: Some(1e-6),
                owner_pid: Some(u32::MAX),
                cpu: 255,
                ..full_record()
            },
        ]
    }

    #[test]
    fn schema_is_the_message_type() {
        let parsed = parse_message_type(MESSAGE).unwrap();
        assert_eq!(*schema().unwrap(), parsed);
    }

    #[test]
    fn three_rows_read_back() {
        let records = three_records();
        let reader = read_back(export(&records, ROW_GROUP_ROWS), &records);
        assert_eq!(reader.num_row_groups(), 1);
    }

    #[test]
    fn several_row_groups_read_back() {
        let records: Vec<_> = three_records().into_iter().cycle().take(7).collect();
        let reader = read_back(export(&records, 3), &records);
        assert_eq!(reader.num_row_groups(), 3);
        let rows: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(rows, [3, 3, 1]);
    }

    #[test]
    fn empty_file_has_the_schema() {
        let file = export(&[], ROW_GROUP_ROWS);
        assert_eq!(&file[..4], b"PAR1");
        assert_eq!(&file[file.len() - 4..], b"PAR1");
        let reader = read_back(file, &[]);
        assert_eq!(reader.num_row_groups(), 0);
        let schema = reader.metadata().file_metadata().schema_descr();
        assert_eq!(schema.num_columns(), COLUMNS.len());
        assert_eq!(schema.name(), MESSAGE_NAME);
    }

    /// Readers skip row groups by these statistics: unsigned columns must be
    /// compared as unsigned even though they are stored as signed INT32/64.
    #[test]
    fn unsigned_statistics() {
        let small = TransitionRecord {
            netns: 1,
            ..full_record()
        };
        let big = TransitionRecord {
            netns: 4_026_531_992,
            ..full_record()
        };
        let file = export(&[small, big], ROW_GROUP_ROWS);
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let netns = COLUMNS.iter().position(|c| c.name == "netns").unwrap();
        let stats = reader.metadata().row_group(0).column(netns).statistics();
        match stats {
            Some(Statistics::Int32(s)) => {
                assert_eq!(s.min_opt().map(|&v| v as u32), Some(1));
                assert_eq!(s.max_opt().map(|&v| v as u32), Some(4_026_531_992));
            }
            other => panic!("netns statistics: {other:?}"),
        }
    }

    #[test]
    fn io_errors_keep_their_kind() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        // The writer buffers, so the error may come at any step up to finish.
        let result = ParquetSink::new(Broken).and_then(|mut sink| {
            sink.write(&full_record())?;
            sink.finish().map(|_| ())
        });
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
