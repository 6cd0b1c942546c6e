//! Summaries of timing samples.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub median: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

pub fn summarize(samples: &mut [Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Summary { n: samples.len(), median: at(0.5), p90: at(0.9), p99: at(0.99) }
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Prints one row of a results table.
pub fn row(name: &str, s: &Summary) {
    println!("| {name:<50} | {:>5} | {:>10} | {:>10} | {:>10} |", s.n, ms(s.median), ms(s.p90), ms(s.p99));
}

pub fn header() {
    println!("| {:<50} | {:>5} | {:>10} | {:>10} | {:>10} |", "what", "n", "median ms", "p90 ms", "p99 ms");
    println!("|{:-<52}|{:->7}|{:->12}|{:->12}|{:->12}|", "", "", "", "", "");
}

pub fn ratio(name: &str, a: Duration, b: Duration) {
    println!("{name}: {:.2}×", a.as_secs_f64() / b.as_secs_f64());
}
