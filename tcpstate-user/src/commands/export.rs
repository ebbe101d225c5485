//! `tcpstate export FILE... --format jsonl|csv|parquet`: one row per
//! transition with its connection id and owner. The JSON Lines export is
//! exactly `trace --json --input FILE...`.
use super::trace::TraceView;
use crate::{
    cli::{ExportArgs, ExportFormat, InputArgs},
    clock::BootClock,
    pipeline::{self, Pipeline},
    sinks::{csv::CsvSink, parquet::ParquetSink, Annotation, TraceSink},
    views::trace::{TraceRow, TransitionRecord},
};
use anyhow::Context;
use std::{
    fs::File,
    io::{self, BufWriter, Write},
};

/// Rows for CSV or Parquet (which have no place for "lost" lines: the lost
/// count is in `report` and in the trace's JSON Lines).
struct RowSink<S> {
    rows: Option<S>,
    clock: BootClock,
}

/// A writer of transition rows.
trait Rows {
    fn row(&mut self, record: &TransitionRecord) -> io::Result<()>;
    fn end(self) -> io::Result<()>;
}

impl<W: Write> Rows for CsvSink<W> {
    fn row(&mut self, record: &TransitionRecord) -> io::Result<()> {
        self.write(record)
    }

    fn end(self) -> io::Result<()> {
        self.finish()?.flush()
    }
}

impl<W: Write + Send> Rows for ParquetSink<W> {
    fn row(&mut self, record: &TransitionRecord) -> io::Result<()> {
        self.write(record)
    }

    fn end(self) -> io::Result<()> {
        self.finish()?.flush()
    }
}

impl<S: Rows> TraceSink for RowSink<S> {
    fn transition(&mut self, row: &TraceRow, annotation: &Annotation) -> io::Result<()> {
        let record = TransitionRecord::new(
            row,
            &self.clock,
            annotation.connection_id,
            annotation.owner.as_ref(),
        );
        match &mut self.rows {
            Some(rows) => rows.row(&record),
            None => Err(io::Error::other("export already finished")),
        }
    }

    fn lost(&mut self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.rows.take().map_or(Ok(()), Rows::end)
    }
}

pub async fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let input = InputArgs {
        input: args.files.clone(),
        ..InputArgs::default()
    };
    let mut pipeline = Pipeline::replay(&input, &args.filters, 30)?;
    let filter = args.filters.to_filter();
    let clock = pipeline.clock;
    let sink: Box<dyn TraceSink> = match (args.format, &args.output) {
        (ExportFormat::Parquet, None) => {
            anyhow::bail!("parquet is binary: name the output file with -o FILE")
        }
        (ExportFormat::Parquet, Some(path)) => Box::new(RowSink {
            rows: Some(ParquetSink::new(BufWriter::new(create(path)?))?),
            clock,
        }),
        (format, path) => {
            let out: Box<dyn Write> = match path {
                Some(path) => Box::new(BufWriter::new(create(path)?)),
                None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
            };
            match format {
                ExportFormat::Csv => Box::new(RowSink {
                    rows: Some(CsvSink::new(out)),
                    clock,
                }),
                _ => super::trace::sink(true, out, pipeline.clock),
            }
        }
    };
    let mut view = TraceView::new(sink, filter);
    pipeline::drive(&mut pipeline, &mut view, None).await
}

/// Exports may hold addresses and process names: mode 0600, and never over
/// an existing file.
fn create(path: &std::path::Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "{}: cannot create the export (an existing file is never replaced)",
                path.display()
            )
        })
}
