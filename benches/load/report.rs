//! The results: markdown tables on stdout and the rows of `load.csv`.

use std::fmt::Write as _;
use std::path::Path;

use crate::BATCH_CALLERS;
use crate::driver::Outcome;

/// The printed table and the CSV rows.
pub struct Report {
    csv: String,
}

impl Report {
    pub fn new() -> Report {
        Report {
            csv: "group,scenario,size,concurrency,calls_per_s,records_per_s,p50_us,p99_us,p999_us,ratio\n".to_owned(),
        }
    }

    /// A section's title and the table's head; `c` names the third column.
    pub fn header(title: &str, c: &str) {
        println!("\n## {title}\n");
        println!("| scenario | record | {c} | calls/s | records/s | p50 | p99 | p99.9 | ratio |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    }

    /// One scenario: its row in the table and in the CSV, with its
    /// records/s as a ratio of each ceiling (the CSV keeps the first).
    pub fn row(
        &mut self,
        group: &str,
        name: &str,
        size: usize,
        c: usize,
        o: &Outcome,
        ceilings: &[(&str, f64)],
    ) {
        let cps = o.calls as f64 / o.secs;
        let rps = o.rps();
        let q = |p: f64| o.hist.value_at_quantile(p) as f64 / 1000.0;
        let ratios: Vec<String> = ceilings
            .iter()
            .map(|(n, v)| format!("{:.2} of {n}", rps / v))
            .collect();
        println!(
            "| {name} | {size} B | {c} | {cps:.0} | {rps:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} |",
            q(0.5),
            q(0.99),
            q(0.999),
            ratios.join(", ")
        );
        let ratio = ceilings
            .first()
            .map_or(String::new(), |(_, v)| format!("{:.4}", rps / v));
        let _ = writeln!(
            self.csv,
            "{group},{name},{size},{c},{cps:.1},{rps:.1},{:.1},{:.1},{:.1},{ratio}",
            q(0.5),
            q(0.99),
            q(0.999)
        );
    }

    /// A batch or stream scenario beside the same calls to the echo server:
    /// both rows, Envelope's as a ratio of the echo server and of raw AES.
    pub fn pair(
        &mut self,
        group: &str,
        name: &str,
        size: usize,
        crypto: f64,
        echo_o: Outcome,
        o: Outcome,
    ) -> Outcome {
        let echo = echo_o.rps();
        self.pair_with(
            group,
            name,
            size,
            echo_o,
            o,
            &[("echo", echo), ("raw AES", crypto)],
        )
    }

    /// The echo row, then Envelope's as a ratio of each of `ceilings`.
    fn pair_with(
        &mut self,
        group: &str,
        name: &str,
        size: usize,
        echo_o: Outcome,
        o: Outcome,
        ceilings: &[(&str, f64)],
    ) -> Outcome {
        self.row(
            group,
            &format!("echo {name}"),
            size,
            BATCH_CALLERS,
            &echo_o,
            &[],
        );
        self.row(group, name, size, BATCH_CALLERS, &o, ceilings);
        o
    }

    /// A column scenario beside the echo server: both rows, Envelope's as a
    /// ratio of the two irreducible costs together (the echo server's time
    /// per record plus Envelope's own in-process time per record,
    /// `in_process` records/s) and of the echo server alone. A ratio of 0.8
    /// means an overhead of 25% beyond those two.
    pub fn column_pair(
        &mut self,
        group: &str,
        name: &str,
        size: usize,
        in_process: f64,
        echo_o: Outcome,
        o: Outcome,
    ) -> Outcome {
        let echo = echo_o.rps();
        let both = 1.0 / (1.0 / echo + 1.0 / in_process);
        self.pair_with(
            group,
            name,
            size,
            echo_o,
            o,
            &[("echo + in-process", both), ("echo", echo)],
        )
    }

    /// An in-process ceiling (no RPC) at `size`.
    pub fn in_process(&mut self, name: &str, size: usize, rps: f64) {
        println!("| {name}, in-process, one core | {size} B | 1 | | {rps:.0} | | | | |");
        let _ = writeln!(self.csv, "ceiling,{name},{size},1,,{rps:.1},,,,");
    }

    /// The raw AES-256-GCM ceiling at `size`.
    pub fn crypto_ceiling(&mut self, size: usize, crypto: f64) {
        println!(
            "| raw AES-256-GCM seal, in-process, one core | {size} B | 1 | | {crypto:.0} | | | | |"
        );
        let _ = writeln!(
            self.csv,
            "ceiling,raw AES-256-GCM seal,{size},1,,{crypto:.1},,,,"
        );
    }

    /// The backend calls and records of the whole run, in the CSV.
    pub fn backend(&mut self, kms: f64, store: f64, records: u64) {
        let _ = writeln!(self.csv, "backend,kms_calls,0,0,,{kms},,,,");
        let _ = writeln!(self.csv, "backend,store_calls,0,0,,{store},,,,");
        let _ = writeln!(self.csv, "backend,records,0,0,,{records},,,,");
    }

    /// Writes `load.csv` into `out_dir`.
    pub fn write(self, out_dir: &Path) {
        std::fs::create_dir_all(out_dir).unwrap();
        let csv = out_dir.join("load.csv");
        std::fs::write(&csv, self.csv).unwrap();
        println!("Results: {}", csv.display());
    }
}
