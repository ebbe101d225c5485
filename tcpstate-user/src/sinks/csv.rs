//! CSV export of transitions (RFC 4180), and the column table that CSV and
//! Parquet share.
//!
//! [`COLUMNS`] is the single source of truth for the tabular formats: the
//! column names (the serde field names of [`TransitionRecord`], in struct
//! order, without `type`, which is always `"transition"`), their types and
//! nullability, and how to read each from a record.
//!
//! CSV specifics: a header row, `\n` line ends, a field is quoted when it
//! holds a comma, a double quote, CR or LF (inner quotes doubled), `None` is
//! an empty field, floats are written with Rust's shortest round-trip
//! representation.
use crate::views::trace::TransitionRecord;
use std::io::{self, Write};

/// The type of a column's (non-null) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Str,
    U16,
    U32,
    U64,
    F64,
}

/// One field of one record, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Str(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    F64(f64),
}

/// One column of the tabular export formats.
#[derive(Clone, Copy)]
pub struct Column {
    /// The serde field name in [`TransitionRecord`].
    pub name: &'static str,
    pub ty: ColumnType,
    /// `true` for the `Option` fields: [`Value::Null`] may be returned.
    pub nullable: bool,
    /// Reads this column from a record; returns a value of type `ty`, or
    /// [`Value::Null`] only if `nullable`.
    pub get: for<'a> fn(&'a TransitionRecord) -> Value<'a>,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column")
            .field("name", &self.name)
            .field("ty", &self.ty)
            .field("nullable", &self.nullable)
            .finish_non_exhaustive()
    }
}

const fn col(
    name: &'static str,
    ty: ColumnType,
    nullable: bool,
    get: for<'a> fn(&'a TransitionRecord) -> Value<'a>,
) -> Column {
    Column {
        name,
        ty,
        nullable,
        get,
    }
}

fn opt<'a, T>(v: Option<T>, f: impl FnOnce(T) -> Value<'a>) -> Value<'a> {
    v.map_or(Value::Null, f)
}

/// Every column of the CSV and Parquet exports, in [`TransitionRecord`]
/// field order. Keep in step with that struct (a test checks the names and
/// nullability against its serde output).
pub const COLUMNS: &[Column] = {
    use ColumnType::*;
    &[
        col("time", Str, false, |r| Value::Str(&r.time)),
        col("ts_boot_ns", U64, false, |r| Value::U64(r.ts_boot_ns)),
        col("connection_id", U64, true, |r| {
            opt(r.connection_id, Value::U64)
        }),
        col("skaddr", Str, false, |r| Value::Str(&r.skaddr)),
        col("netns", U32, false, |r| Value::U32(r.netns)),
        col("family", Str, false, |r| Value::Str(r.family)),
        col("laddr", Str, false, |r| Value::Str(&r.laddr)),
        col("lport", U16, false, |r| Value::U16(r.lport)),
        col("raddr", Str, false, |r| Value::Str(&r.raddr)),
        col("rport", U16, false, |r| Value::U16(r.rport)),
        col("old", Str, false, |r| Value::Str(r.old)),
        col("new", Str, false, |r| Value::Str(r.new)),
        col("old_state_ms", F64, true, |r| {
            opt(r.old_state_ms, Value::F64)
        }),
        col("owner_tgid", U32, true, |r| opt(r.owner_tgid, Value::U32)),
        col("owner_pid", U32, true, |r| opt(r.owner_pid, Value::U32)),
        col("owner_comm", Str, true, |r| {
            opt(r.owner_comm.as_deref(), Value::Str)
        }),
        col("owner_how", Str, true, |r| opt(r.owner_how, Value::Str)),
        col("owner_cgroup_id", U64, true, |r| {
            opt(r.owner_cgroup_id, Value::U64)
        }),
        col("ctx_pid", U32, false, |r| Value::U32(r.ctx_pid)),
        col("ctx_tgid", U32, false, |r| Value::U32(r.ctx_tgid)),
        col("ctx_comm", Str, false, |r| Value::Str(&r.ctx_comm)),
        col("cpu", U32, false, |r| Value::U32(r.cpu)),
    ]
};

/// Writes transitions as CSV. The header is written with the first row, or
/// by [`CsvSink::finish`] when there was none.
///
/// Each row is assembled in memory and handed to `out` in one `write_all`;
/// wrap a file in a `BufWriter` all the same.
pub struct CsvSink<W: Write> {
    out: W,
    line: String,
    header_written: bool,
}

impl<W: Write> CsvSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: String::with_capacity(256),
            header_written: false,
        }
    }

    pub fn write(&mut self, record: &TransitionRecord) -> io::Result<()> {
        self.header()?;
        self.line.clear();
        for (i, column) in COLUMNS.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_value(&mut self.line, (column.get)(record));
        }
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    /// Writes the header if no row was written, flushes, and returns the
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header()?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        self.line.clear();
        for (i, column) in COLUMNS.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_field(&mut self.line, column.name);
        }
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())?;
        self.header_written = true;
        Ok(())
    }
}

fn push_value(line: &mut String, value: Value<'_>) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = match value {
        Value::Null => Ok(()),
        Value::Str(s) => {
            push_field(line, s);
            Ok(())
        }
        Value::U16(v) => write!(line, "{v}"),
        Value::U32(v) => write!(line, "{v}"),
        Value::U64(v) => write!(line, "{v}"),
        // `Display` for f64 is the shortest string that parses back to the
        // same value, never in exponent notation.
        Value::F64(v) => write!(line, "{v}"),
    };
}

/// Appends `s` as one RFC 4180 field.
fn push_field(line: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        line.push('"');
        for (i, part) in s.split('"').enumerate() {
            if i > 0 {
                line.push_str("\"\"");
            }
            line.push_str(part);
        }
        line.push('"');
    } else {
        line.push_str(s);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// A record with every field set, for the tests of all formats.
    pub(crate) fn full_record() -> TransitionRecord {
        TransitionRecord {
            kind: "transition",
            time: "2024-05-01T12:34:56.123456789Z".into(),
            ts_boot_ns: 123_456_789_012,
            connection_id: Some(42),
            skaddr: "0xffff888012345678".into(),
            netns: 4_026_531_840,
            family: "ipv4",
            laddr: "10.0.0.1".into(),
            lport: 443,
            raddr: "10.0.0.2".into(),
            rport: 65_535,
            old: "SYN_RECV",
            new: "ESTABLISHED",
            old_state_ms: Some(0.1 + 0.2),
            owner_tgid: Some(1000),
            owner_pid: Some(1001),
            owner_comm: Some("nginx".into()),
            owner_how: Some("accept"),
            owner_cgroup_id: Some(7),
            ctx_pid: 0,
            ctx_tgid: 0,
            ctx_comm: "swapper/1".into(),
            cpu: 1,
        }
    }

    /// A record with every `Option` field `None`.
    pub(crate) fn sparse_record() -> TransitionRecord {
        TransitionRecord {
            connection_id: None,
            old_state_ms: None,
            owner_tgid: None,
            owner_pid: None,
            owner_comm: None,
            owner_how: None,
            owner_cgroup_id: None,
            ..full_record()
        }
    }

    /// The keys of a JSON object, in order.
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[test]
    fn columns_are_the_serde_fields_in_order() {
        let json = serde_json::to_string(&full_record()).unwrap();
        let Keys(keys) = serde_json::from_str(&json).unwrap();
        assert_eq!(keys.first().map(String::as_str), Some("type"));
        let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(names, keys[1..]);
    }

    #[test]
    fn columns_nullability_and_types_match_serde() {
        let (sparse_record, full_record) = (sparse_record(), full_record());
        let sparse = serde_json::to_value(&sparse_record).unwrap();
        let full = serde_json::to_value(&full_record).unwrap();
        for column in COLUMNS {
            assert_eq!(
                sparse[column.name].is_null(),
                column.nullable,
                "{}",
                column.name
            );
            assert_eq!((column.get)(&sparse_record) == Value::Null, column.nullable);
            let json = &full[column.name];
            let value = (column.get)(&full_record);
            let ok = match (column.ty, value) {
                (ColumnType::Str, Value::Str(s)) => json.as_str() == Some(s),
                (ColumnType::U16, Value::U16(v)) => json.as_u64() == Some(v.into()),
                (ColumnType::U32, Value::U32(v)) => json.as_u64() == Some(v.into()),
                (ColumnType::U64, Value::U64(v)) => json.as_u64() == Some(v),
                (ColumnType::F64, Value::F64(v)) => json.as_f64() == Some(v),
                _ => false,
            };
            assert!(ok, "{}: {:?} vs {json}", column.name, value);
        }
    }

    fn csv(records: &[TransitionRecord]) -> String {
        let mut sink = CsvSink::new(Vec::new());
        for r in records {
            sink.write(r).unwrap();
        }
        String::from_utf8(sink.finish().unwrap()).unwrap()
    }

    const HEADER: &str = "time,ts_boot_ns,connection_id,skaddr,netns,family,laddr,lport,\
        raddr,rport,old,new,old_state_ms,owner_tgid,owner_pid,owner_comm,owner_how,\
        owner_cgroup_id,ctx_pid,ctx_tgid,ctx_comm,cpu\n";

    #[test]
    fn empty_export_is_the_header() {
        assert_eq!(csv(&[]), HEADER);
    }

    #[test]
    fn full_row() {
        let out = csv(&[full_record()]);
        assert_eq!(
            out,
            format!(
                "{HEADER}2024-05-01T12:34:56.123456789Z,123456789012,42,0xffff888012345678,\
                 4026531840,ipv4,10.0.0.1,443,10.0.0.2,65535,SYN_RECV,ESTABLISHED,\
                 0.30000000000000004,1000,1001,nginx,accept,7,0,0,swapper/1,1\n"
            )
        );
    }

    #[test]
    fn none_is_an_empty_field() {
        let out = csv(&[sparse_record()]);
        let row = out.lines().nth(1).unwrap();
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), COLUMNS.len());
        for (column, field) in COLUMNS.iter().zip(&fields) {
            assert_eq!(field.is_empty(), column.nullable, "{}", column.name);
        }
    }

    #[test]
    fn quoting() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("\"", "\"\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\r", "\"cr\r\""),
            ("crlf\r\n", "\"crlf\r\n\""),
            (" spaced ", " spaced "),
            ("tab\there", "tab\there"),
            ("ünïcødé,✓", "\"ünïcødé,✓\""),
        ];
        for (input, quoted) in cases {
            let mut line = String::new();
            push_field(&mut line, input);
            assert_eq!(line, quoted, "{input:?}");
        }
    }

    #[test]
    fn quoted_comms_in_a_row() {
        let r = TransitionRecord {
            owner_comm: Some("a,\"b\"\nc".into()),
            ctx_comm: "x,y".into(),
            ..full_record()
        };
        let out = csv(&[r]);
        assert!(
            out.contains(",\"a,\"\"b\"\"\nc\",accept,7,0,0,\"x,y\",1\n"),
            "{out}"
        );
        // Two records, not more: the newline inside the quoted comm is data.
        assert_eq!(parse(&out).len(), 2);
        assert_eq!(parse(&out)[1][15], "a,\"b\"\nc");
        assert_eq!(parse(&out)[1][20], "x,y");
    }

    #[test]
    fn floats_round_trip() {
        for v in [
            0.0,
            1e-9,
            1.5e-7,
            123.456,
            1e21,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let mut line = String::new();
            push_value(&mut line, Value::F64(v));
            assert_eq!(line.parse::<f64>().unwrap(), v, "{line}");
            assert!(!line.contains(['e', 'E', ',']), "{line}");
        }
    }

    /// A minimal RFC 4180 reader, to check what was written.
    fn parse(text: &str) -> Vec<Vec<String>> {
        let mut records = Vec::new();
        let mut record = Vec::new();
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => record.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                (false, c) => field.push(c),
            }
        }
        assert!(field.is_empty() && record.is_empty() && !quoted);
        records
    }

    #[test]
    fn rows_parse_back() {
        let records = [full_record(), sparse_record()];
        let rows = parse(&csv(&records));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>());
        for (record, row) in records.iter().zip(&rows[1..]) {
            for (column, field) in COLUMNS.iter().zip(row) {
                let expected = match (column.get)(record) {
                    Value::Null => String::new(),
                    Value::Str(s) => s.to_string(),
                    Value::U16(v) => v.to_string(),
                    Value::U32(v) => v.to_string(),
                    Value::U64(v) => v.to_string(),
                    Value::F64(v) => v.to_string(),
                };
                assert_eq!(*field, expected, "{}", column.name);
            }
        }
    }
}
