//! The synthetic table: deterministic pg_dump-like COPY rows and one day of
//! scattered churn (updates in place and moved to the end, inserts, deletes).

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "invoice",
    "customer",
    "shipped",
    "pending",
    "cancelled",
    "refund",
    "warehouse",
    "berlin",
    "paris",
    "tokyo",
];

/// The table: row ids in physical order, each with an update counter.
pub struct Table {
    order: Vec<u32>,
    version: Vec<u32>,
}

impl Table {
    pub fn new(rows: usize) -> Table {
        Table {
            order: (0..rows as u32).collect(),
            version: vec![0; rows],
        }
    }

    /// One day of churn; deterministic for a given day.
    pub fn churn(&mut self, day: u64, update_permille: usize) {
        let mut rng = StdRng::seed_from_u64(0xC0FFEE + day);
        let n = self.order.len();
        let mut moved = Vec::new();
        let mut keep = vec![true; n];
        for _ in 0..n * update_permille / 1000 {
            let pos = rng.gen_range(0..n);
            let id = self.order[pos] as usize;
            self.version[id] += 1;
            if rng.gen_bool(0.5) && keep[pos] {
                keep[pos] = false;
                moved.push(self.order[pos]);
            }
        }
        for _ in 0..n / 1000 {
            let pos = rng.gen_range(0..n);
            keep[pos] = false; // deleted
        }
        let mut order: Vec<u32> = self
            .order
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(id, _)| *id)
            .collect();
        order.extend(moved);
        for _ in 0..n / 1000 {
            order.push(self.version.len() as u32);
            self.version.push(0);
        }
        self.order = order;
    }

    /// Renders the dump: a header, then one COPY line per row.
    pub fn render(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"--\n-- PostgreSQL database dump\n--\nCOPY public.orders (id, customer, note, amount, qty, created_at, payload) FROM stdin;\n");
        for &id in &self.order {
            render_row(id, self.version[id as usize], out);
        }
        out.extend_from_slice(b"\\.\n");
    }
}

fn render_row(id: u32, version: u32, out: &mut Vec<u8>) {
    let mut rng = StdRng::seed_from_u64((u64::from(id) << 20) ^ u64::from(version));
    let w = |rng: &mut StdRng| WORDS[rng.gen_range(0..WORDS.len())];
    let customer = format!("{} {}", w(&mut rng), w(&mut rng));
    let words = rng.gen_range(3..12);
    let mut note = String::new();
    for i in 0..words {
        if i > 0 {
            note.push(' ');
        }
        note.push_str(w(&mut rng));
    }
    let amount: u32 = rng.gen_range(0..10_000_000);
    let qty: u16 = rng.r#gen();
    let ts = 1_700_000_000u64 + u64::from(id) * 37 + u64::from(version) * 86_400;
    // A short incompressible token, like a bytea or hash column.
    let token: u64 = rng.r#gen();
    let _ = writeln!(
        out,
        "{id}\t{customer}\t{note}\t{}.{:02}\t{qty}\t{ts}\t{{\"v\": {version}, \"tag\": \"{}\", \"token\": \"{token:016x}\"}}",
        amount / 100,
        amount % 100,
        w(&mut rng),
    );
}
