//! A synthetic online shop to try the campaigns on: `moments sample-data`.
//!
//! [`write_sample`] simulates `customers` customers of an imaginary shop, day by day over
//! `days` days from `start`, and writes what a tracking pipeline would have recorded, in the
//! native newline-delimited JSON `track` / `identify` shape (`shared/spec/data.md`), gzip
//! compressed:
//!
//! - `customers.ndjson.gz`: the `identify` records (a first one when a customer appears, then
//!   one whenever a trait changes: an unsubscribe, an SMS opt-in, a subscription renewal, a
//!   VIP upgrade);
//! - `events/YYYY-MM.ndjson.gz` (or `events/YYYY-MM-DD.ndjson.gz` when a month would make a
//!   file too large): the `track` records, customer events and catalog events alike;
//! - `README.md`: what the data is, how it was made, and what is in it.
//!
//! Every file is sorted by (timestamp, userId, messageId), so a reader can stream it.
//!
//! **Deterministic.** The output is a function of the options alone, byte for byte: the
//! random numbers come from a small counter-based generator (splitmix64) seeded by `seed`
//! and, for each customer, by the customer's index, so a customer behaves the same whatever
//! order the customers are simulated in; floating point is used only with `+ - * /`; maps
//! are iterated in sorted order; no clock is read; gzip headers carry no file name and a zero
//! modification time.
//!
//! **Bounded memory.** The customers' state is small and kept for the whole run; records are
//! produced one day at a time, sorted and written, and only the records already scheduled for
//! later days (deliveries, reviews, refunds, renewals) wait in memory. Gzip compression runs
//! in a second thread beside the simulation.
//!
//! The shop: a fixed catalog of 200 products in ten categories, with prices and a long-tailed
//! popularity; stock outages; "deal of the day" spikes (and Black Friday) that make one
//! product sell to many customers at once; Christmas shopping in December. Customers have
//! first names, example-domain emails, birthdays (some missing, some on 29 February), time
//! zones, tiers, consents that change, fictional phone numbers, subscriptions and referral
//! codes, and sessions in which they browse, fill and abandon carts, order, get deliveries
//! (some late), report problems, get refunds, write reviews, ask for stock alerts, earn and
//! redeem points, share referral codes and click messages. The README written beside the data
//! says which moment of `campaigns/` each behaviour is there for.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOptions {
    /// How many customers the shop has (some of them appear only during the period).
    pub customers: u64,
    /// How many days to simulate, from `start`.
    pub days: u32,
    /// The same seed gives the same data, byte for byte.
    pub seed: u64,
    /// The first day, at midnight UTC (a time of day is ignored: the day starts at midnight).
    pub start: DateTime<Utc>,
}

impl SampleOptions {
    /// The default first day: 2026-11-01, so that the default 60 days run through Black
    /// Friday and the whole of December 2026 (the holiday cutoff campaign is active from 1 to
    /// 21 December and fires on the 18th).
    pub fn default_start() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 11, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
            .unwrap_or_default()
    }
}

impl Default for SampleOptions {
    /// 1000 customers, 60 days from 2026-11-01, seed 42: the repository's embedded sample.
    fn default() -> SampleOptions {
        SampleOptions {
            customers: 1000,
            days: 60,
            seed: 42,
            start: SampleOptions::default_start(),
        }
    }
}

/// What [`write_sample`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SampleSummary {
    /// Every file written: `customers.ndjson.gz`, the event files in date order, `README.md`.
    pub files: Vec<PathBuf>,
    /// Records (lines) in all the data files.
    pub records: u64,
    /// Records by kind: `"identify"`, and each event's source name (`"Order Completed"`).
    pub by_kind: BTreeMap<String, u64>,
}

/// The largest number of customers [`write_sample`] accepts.
pub const MAX_CUSTOMERS: u64 = 10_000_000;
/// The largest number of days [`write_sample`] accepts (ten years).
pub const MAX_DAYS: u32 = 3_660;

/// Records per event file above which months are split into shorter spans of days.
const RECORDS_PER_FILE: u64 = 2_000_000;
/// Compression level of the gzip files (6 is gzip's default; 1 keeps the large benchmark
/// data fast to write).
const LEVEL_SMALL: u32 = 6;
const LEVEL_LARGE: u32 = 1;
/// Customer-days above which the fast level is used.
const LARGE_CUSTOMER_DAYS: u64 = 500_000;

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Simulate the shop and write the data files and a README into `out` (created if needed).
///
/// Event files of an earlier run in `out/events/` that this run does not write (named like
/// `YYYY-MM.ndjson.gz` or `YYYY-MM-DD.ndjson.gz`) are removed, so that the directory holds
/// exactly one data set; nothing else in `out` is touched.
pub fn write_sample(options: &SampleOptions, out: &Path) -> io::Result<SampleSummary> {
    if options.customers > MAX_CUSTOMERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "at most {MAX_CUSTOMERS} customers, not {}",
                options.customers
            ),
        ));
    }
    if options.days > MAX_DAYS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_DAYS} days, not {}", options.days),
        ));
    }
    let world = World::new(options);
    let shards = plan_shards(&world, options);
    let events_dir = out.join("events");
    fs::create_dir_all(&events_dir).map_err(|e| with_path(e, &events_dir))?;
    remove_stale(&events_dir, &shards)?;

    let level = if options.customers.saturating_mul(u64::from(options.days)) > LARGE_CUSTOMER_DAYS {
        LEVEL_LARGE
    } else {
        LEVEL_SMALL
    };
    let customers_path = out.join("customers.ndjson.gz");
    let mut files = vec![customers_path.clone()];
    files.extend(shards.iter().map(|s| out.join(&s.name)));

    // Compression runs in a thread of its own, beside the simulation.
    let (sender, receiver) = mpsc::sync_channel::<Chunk>(4);
    let counts = thread::scope(|scope| {
        let writer = scope.spawn(move || write_chunks(&customers_path, level, receiver));
        let counts = simulate(&world, options, &shards, out, &sender);
        drop(sender);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the gzip writer stopped unexpectedly")));
        written.map(|()| counts)
    })?;

    let readme = out.join("README.md");
    let text = readme_text(options, &world, &shards, &counts);
    fs::write(&readme, text).map_err(|e| with_path(e, &readme))?;
    files.push(readme);

    let by_kind: BTreeMap<String, u64> = counts
        .by_kind
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Ok(SampleSummary {
        files,
        records: by_kind.values().sum(),
        by_kind,
    })
}

/// What the simulation hands to the writer thread.
enum Chunk {
    /// Lines for `customers.ndjson.gz`.
    Customers(Vec<u8>),
    /// Start a new event file.
    Open(PathBuf),
    /// Lines for the current event file.
    Events(Vec<u8>),
}

/// The writer thread: gzip the chunks into their files, in order.
fn write_chunks(
    customers_path: &Path,
    level: u32,
    chunks: mpsc::Receiver<Chunk>,
) -> io::Result<()> {
    let mut customers = GzFile::create(customers_path, level)?;
    let mut events: Option<GzFile> = None;
    for chunk in chunks {
        match chunk {
            Chunk::Customers(bytes) => customers.write(&bytes)?,
            Chunk::Open(path) => {
                if let Some(file) = events.take() {
                    file.finish()?;
                }
                events = Some(GzFile::create(&path, level)?);
            }
            Chunk::Events(bytes) => {
                if let Some(file) = events.as_mut() {
                    file.write(&bytes)?;
                }
            }
        }
    }
    if let Some(file) = events.take() {
        file.finish()?;
    }
    customers.finish()
}

/// Simulate every customer day by day, and send each day's records, sorted and rendered, to
/// the writer. Stops early if the writer has stopped (its error is what the caller reports).
fn simulate(
    world: &World,
    options: &SampleOptions,
    shards: &[Shard],
    out: &Path,
    sender: &mpsc::SyncSender<Chunk>,
) -> Counts {
    let mut counts = Counts::default();
    // `options.customers <= MAX_CUSTOMERS` fits a u32.
    let n = u32::try_from(options.customers).unwrap_or(u32::MAX);
    let mut customers: Vec<Customer> = Vec::with_capacity(n as usize);
    let mut pending: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    let mut last_alert = vec![i64::MIN; world.catalog.products.len()];
    let mut initial = Vec::new();
    for index in 0..n {
        let (customer, identify) = Customer::new(world, index);
        customers.push(customer);
        if let Some(record) = identify {
            initial.push(record);
        }
    }
    if !initial.is_empty() {
        pending.insert(0, initial);
    }

    let render = Renderer::new(world, options);
    let mut shard_iter = shards.iter().peekable();
    let mut capacity = 1 << 16;
    for day in 0..options.days {
        if let Some(shard) = shard_iter.next_if(|s| s.first == day) {
            if sender.send(Chunk::Open(out.join(&shard.name))).is_err() {
                return counts;
            }
            counts.events.push(0);
        }
        let mut batch = pending.remove(&day).unwrap_or_default();
        world.restocks(day, &last_alert, &mut batch);
        let mut sink = Sink {
            day_start: world.day_start(day),
            period_end: world.day_start(options.days),
            start: world.start,
            batch: &mut batch,
            pending: &mut pending,
            last_alert: &mut last_alert,
        };
        for customer in &mut customers {
            customer.simulate_day(world, day, &mut sink);
        }
        // Message ids are unique, so no two records are equal and the order is total.
        batch.sort_unstable_by(|a, b| compare(a, b, render.width));
        let mut lines = Vec::with_capacity(capacity);
        let mut identify_lines = Vec::new();
        for record in &batch {
            let kind = record.body.kind();
            *counts.by_kind.entry(kind).or_insert(0) += 1;
            if matches!(record.body, Body::Identify(_)) {
                render.record(record, &mut identify_lines);
                counts.customers += 1;
            } else {
                render.record(record, &mut lines);
                if let Some(n) = counts.events.last_mut() {
                    *n += 1;
                }
            }
        }
        capacity = capacity.max(lines.len() + lines.len() / 8);
        if sender.send(Chunk::Customers(identify_lines)).is_err()
            || sender.send(Chunk::Events(lines)).is_err()
        {
            return counts;
        }
    }
    counts
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Random numbers

/// splitmix64: a counter run through a strong mixing function. Small, fast, and the same on
/// every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent streams: what a generator is for, besides the seed and an index.
const STREAM_CUSTOMER: u64 = 1;
const STREAM_DAY: u64 = 2;
const STREAM_STOCK: u64 = 3;
/// The catalog is the same for every seed.
const CATALOG_SEED: u64 = 0x5107_2026;

impl Rng {
    fn new(seed: u64, stream: u64, index: u64) -> Rng {
        Rng(mix(mix(seed ^ GOLDEN)
            .wrapping_add(mix(stream.wrapping_mul(GOLDEN) ^ 0x5A5A))
            .wrapping_add(mix(index.wrapping_add(0xC0FFEE)))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, n); 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [lo, hi], both included.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// One of `items` (which are never empty here).
    fn pick<T: Copy>(&mut self, items: &[T], fallback: T) -> T {
        let i = self.below(items.len() as u64) as usize;
        items.get(i).copied().unwrap_or(fallback)
    }

    /// One of `items`, with the given weights.
    fn weighted<T: Copy>(&mut self, items: &[(T, u32)], fallback: T) -> T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (item, w) in items {
            let w = u64::from(*w);
            if x < w {
                return *item;
            }
            x -= w;
        }
        fallback
    }
}

// ---------------------------------------------------------------------------------------
// The shop

const CATEGORIES: [(&str, &[&str], i64, i64); 10] = [
    (
        "home",
        &[
            "Candle",
            "Cushion",
            "Throw",
            "Vase",
            "Photo Frame",
            "Doormat",
            "Table Lamp",
            "Wall Clock",
        ],
        8,
        65,
    ),
    (
        "kitchen",
        &[
            "Mug",
            "Tea Towel",
            "Teapot",
            "Chopping Board",
            "Apron",
            "Salad Bowl",
            "Cafetière",
        ],
        6,
        48,
    ),
    (
        "beauty",
        &[
            "Hand Cream",
            "Bath Salts",
            "Lip Balm",
            "Face Oil",
            "Soap Bar",
            "Body Scrub",
        ],
        5,
        42,
    ),
    (
        "fashion",
        &[
            "Scarf", "Beanie", "Gloves", "Socks", "Jumper", "Cardigan", "Tote Bag",
        ],
        12,
        120,
    ),
    (
        "jewellery",
        &["Necklace", "Earrings", "Bracelet", "Ring", "Brooch"],
        18,
        190,
    ),
    (
        "stationery",
        &[
            "Notebook",
            "Planner",
            "Pen Set",
            "Card Pack",
            "Wrapping Paper",
        ],
        3,
        30,
    ),
    (
        "toys",
        &[
            "Jigsaw Puzzle",
            "Board Game",
            "Plush Fox",
            "Building Set",
            "Kite",
        ],
        10,
        75,
    ),
    (
        "garden",
        &[
            "Plant Pot",
            "Bird Feeder",
            "Watering Can",
            "Seed Kit",
            "Garden Gloves",
        ],
        8,
        55,
    ),
    (
        "food",
        &[
            "Chocolate Box",
            "Coffee Beans",
            "Loose Leaf Tea",
            "Honey Jar",
            "Shortbread Tin",
        ],
        4,
        32,
    ),
    (
        "electronics",
        &["Bluetooth Speaker", "Headphones", "Desk Lamp", "Power Bank"],
        20,
        185,
    ),
];

const ADJECTIVES: [&str; 20] = [
    "Linen",
    "Oak",
    "Ceramic",
    "Wool",
    "Copper",
    "Velvet",
    "Cotton",
    "Stoneware",
    "Recycled",
    "Organic",
    "Nordic",
    "Vintage",
    "Marble",
    "Bamboo",
    "Midnight",
    "Sage",
    "Coral",
    "Amber",
    "Classic",
    "Mini",
];

const PRODUCTS: usize = 200;

struct Product {
    /// `"p017"`.
    id: String,
    category: &'static str,
    name: String,
    /// In pence.
    price: u32,
    weight: u64,
}

struct Catalog {
    products: Vec<Product>,
    /// Cumulative popularity weights, for sampling.
    cumulative: Vec<u64>,
    /// Product indexes, most popular first.
    by_popularity: Vec<u16>,
}

impl Catalog {
    fn new() -> Catalog {
        let mut rng = Rng::new(CATALOG_SEED, 0, 0);
        let mut products = Vec::with_capacity(PRODUCTS);
        let bases: Vec<Vec<usize>> = CATEGORIES
            .iter()
            .map(|(_, nouns, _, _)| {
                nouns
                    .iter()
                    .map(|_| rng.below(ADJECTIVES.len() as u64) as usize)
                    .collect()
            })
            .collect();
        for i in 0..PRODUCTS {
            let c = i % CATEGORIES.len();
            let k = i / CATEGORIES.len();
            let (category, nouns, lo, hi) = CATEGORIES[c];
            let noun = nouns[k % nouns.len()];
            let base = bases[c].get(k % nouns.len()).copied().unwrap_or(0);
            let adjective = ADJECTIVES[(base + k / nouns.len()) % ADJECTIVES.len()];
            let pounds = rng.range(lo, hi);
            let pence = rng.weighted(&[(99, 6), (50, 2), (0, 2)], 99);
            let price = if pence == 0 {
                pounds * 100
            } else {
                (pounds - 1).max(0) * 100 + pence
            };
            products.push(Product {
                id: format!("p{:03}", i + 1),
                category,
                name: format!("{adjective} {noun}"),
                price: u32::try_from(price.max(99)).unwrap_or(99),
                weight: 0,
            });
        }
        // A long tail: the product of rank r (0 the most popular) weighs 1 / (r + 4).
        let mut order: Vec<u16> = (0..PRODUCTS as u16).collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        for (rank, &p) in order.iter().enumerate() {
            if let Some(product) = products.get_mut(p as usize) {
                product.weight = 1_000_000 / (rank as u64 + 4);
            }
        }
        let mut cumulative = Vec::with_capacity(PRODUCTS);
        let mut total = 0;
        for product in &products {
            total += product.weight;
            cumulative.push(total);
        }
        Catalog {
            products,
            cumulative,
            by_popularity: order,
        }
    }

    /// A product, by popularity.
    fn sample(&self, rng: &mut Rng) -> u16 {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let x = rng.below(total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.products.len().saturating_sub(1)) as u16
    }

    fn price(&self, product: u16) -> u32 {
        self.products.get(product as usize).map_or(0, |p| p.price)
    }
}

/// Everything that is the same for all customers: the catalog, the calendar, stock, deals.
struct World {
    seed: u64,
    /// Unix seconds of the first day's midnight (UTC).
    start: i64,
    start_date: NaiveDate,
    days: u32,
    catalog: Catalog,
    /// Per product: (out of stock from, back in stock at), Unix seconds, in order.
    outages: Vec<Vec<(i64, i64)>>,
    /// Per day: the product on a one-day deal, if any.
    featured: Vec<Option<u16>>,
    /// Per day: how busy the shop is (1 is an ordinary weekday).
    season: Vec<f64>,
}

impl World {
    fn new(options: &SampleOptions) -> World {
        let start_date = options.start.date_naive();
        let start = start_date
            .and_hms_opt(0, 0, 0)
            .map_or(0, |d| d.and_utc().timestamp());
        let catalog = Catalog::new();
        let mut world = World {
            seed: options.seed,
            start,
            start_date,
            days: options.days,
            outages: Vec::new(),
            featured: Vec::new(),
            season: Vec::new(),
            catalog,
        };
        let mut rank = vec![PRODUCTS; PRODUCTS];
        for (r, &p) in world.catalog.by_popularity.iter().enumerate() {
            if let Some(slot) = rank.get_mut(p as usize) {
                *slot = r;
            }
        }
        world.outages = (0..PRODUCTS)
            .map(|p| world.plan_outages(p, rank.get(p).copied().unwrap_or(PRODUCTS)))
            .collect();
        world.season = (0..options.days).map(|d| season(world.date(d))).collect();
        world.featured = (0..options.days).map(|d| world.plan_deal(d)).collect();
        world
    }

    fn day_start(&self, day: u32) -> i64 {
        self.start + i64::from(day) * DAY
    }

    fn date(&self, day: u32) -> NaiveDate {
        self.start_date
            .checked_add_signed(Duration::days(i64::from(day)))
            .unwrap_or(self.start_date)
    }

    /// The day (from the start) that `at` falls in.
    fn day_of(&self, at: i64) -> u32 {
        u32::try_from((at - self.start).div_euclid(DAY)).unwrap_or(0)
    }

    /// Stock outages: popular products sell out more often. Each lasts 2 to 8 days and ends
    /// in the morning, when the delivery is unpacked.
    fn plan_outages(&self, product: usize, rank: usize) -> Vec<(i64, i64)> {
        let mut rng = Rng::new(self.seed, STREAM_STOCK, product as u64);
        let p = if rank < 30 { 1.0 / 60.0 } else { 1.0 / 250.0 };
        let mut out = Vec::new();
        let mut day = 0u32;
        while day < self.days {
            if rng.chance(p) {
                let from = self.day_start(day) + rng.range(6 * HOUR, 22 * HOUR);
                let length = rng.range(2, 8) as u32;
                let back = self.day_start(day + length) + rng.range(6 * HOUR, 10 * HOUR);
                out.push((from, back));
                day += length + 4;
            } else {
                day += 1;
            }
        }
        out
    }

    /// A one-day deal: on Black Friday and Cyber Monday, and on about one day in four, a
    /// popular product in stock all day is 20% off and pushed on the home page.
    fn plan_deal(&self, day: u32) -> Option<u16> {
        let mut rng = Rng::new(self.seed, STREAM_DAY, u64::from(day));
        let date = self.date(day);
        let big_day = is_black_friday(date) || is_cyber_monday(date);
        if !big_day && !rng.chance(0.25) {
            return None;
        }
        let (from, to) = (self.day_start(day), self.day_start(day + 1));
        for _ in 0..12 {
            let p = rng.pick(&self.catalog.by_popularity[..30], 0);
            let out = self
                .outages
                .get(p as usize)
                .is_some_and(|o| o.iter().any(|&(a, b)| a < to && b > from));
            if !out {
                return Some(p);
            }
        }
        None
    }

    fn featured(&self, day: u32) -> Option<u16> {
        self.featured.get(day as usize).copied().flatten()
    }

    fn season(&self, day: u32) -> f64 {
        self.season.get(day as usize).copied().unwrap_or(1.0)
    }

    /// The outage `product` is in at `at`, if any.
    fn outage(&self, product: u16, at: i64) -> Option<(i64, i64)> {
        self.outages
            .get(product as usize)?
            .iter()
            .copied()
            .find(|&(from, back)| from <= at && at < back)
    }

    /// The price of `product` on `day`: 20% off on its deal day.
    fn price(&self, product: u16, day: u32) -> u32 {
        let price = self.catalog.price(product);
        if self.featured(day) == Some(product) {
            (price * 8 / 10 / 10) * 10 + 9
        } else {
            price
        }
    }

    /// "Back In Stock" for the products back today that somebody asked about while they
    /// were out (asked on an earlier day: what the shop knows when it restocks).
    fn restocks(&self, day: u32, last_alert: &[i64], batch: &mut Vec<Record>) {
        let (from, to) = (self.day_start(day), self.day_start(day + 1));
        for (p, outages) in self.outages.iter().enumerate() {
            for &(out, back) in outages {
                let asked = last_alert.get(p).is_some_and(|&a| a >= out);
                if back >= from && back < to && asked {
                    batch.push(Record {
                        at: back,
                        customer: None,
                        seq: day,
                        body: Body::BackInStock { product: p as u16 },
                    });
                }
            }
        }
    }
}

fn is_black_friday(date: NaiveDate) -> bool {
    date.month() == 11 && date.weekday() == Weekday::Fri && (22..=28).contains(&date.day())
}

fn is_cyber_monday(date: NaiveDate) -> bool {
    date.checked_sub_signed(Duration::days(3))
        .is_some_and(is_black_friday)
}

/// How busy a day is: weekends, Black Friday, Christmas shopping, the quiet days after.
fn season(date: NaiveDate) -> f64 {
    let base = if is_black_friday(date) {
        1.8
    } else if is_cyber_monday(date) {
        1.5
    } else {
        match (date.month(), date.day()) {
            (12, 1..=20) => 1.3,
            (12, 21..=23) => 1.1,
            (12, 24..=26) => 0.6,
            _ => 1.0,
        }
    };
    match date.weekday() {
        Weekday::Sat | Weekday::Sun => base * 1.1,
        _ => base,
    }
}

// ---------------------------------------------------------------------------------------
// Records

/// One line of output, before rendering.
#[derive(Debug, Clone)]
struct Record {
    /// Unix seconds.
    at: i64,
    /// `None` for catalog events.
    customer: Option<u32>,
    /// The customer's record number (the message id), or the day of a catalog event.
    seq: u32,
    body: Body,
}

#[derive(Debug, Clone, Copy)]
struct Line {
    product: u16,
    quantity: u8,
    /// In pence, each.
    price: u32,
}

/// The send a click names.
#[derive(Debug, Clone, Copy)]
enum ClickedSend {
    /// A message of some other system: an id nothing in the run will match.
    Other(u64),
    /// The `back_in_stock` message for the restock of `product` on `day`: its send id is
    /// the one the engine gives it (moment, customer, the catalog event's messageId).
    BackInStock { product: u16, day: u32 },
}

#[derive(Debug, Clone)]
enum Body {
    Identify(Box<Traits>),
    SessionStarted,
    MessageClicked {
        moment: u8,
        send: Option<ClickedSend>,
    },
    ProductViewed {
        product: u16,
        price: u32,
    },
    ProductAdded(Line),
    CartViewed {
        value: u32,
    },
    StockAlertRequested {
        product: u16,
    },
    OrderCompleted {
        order: u32,
        total: u32,
        lines: Box<[Line]>,
    },
    OrderCancelled {
        order: u32,
        total: u32,
    },
    OrderDelivered {
        order: u32,
        late: bool,
    },
    OrderIssueReported {
        order: u32,
        issue: &'static str,
    },
    OrderRefunded {
        order: u32,
        amount: u32,
    },
    ProductReviewed {
        product: u16,
        rating: u8,
    },
    PointsEarned {
        points: u32,
    },
    PointsRedeemed {
        points: u32,
    },
    SubscriptionRenewed {
        plan: u8,
    },
    ReferralShared {
        channel: &'static str,
    },
    BackInStock {
        product: u16,
    },
}

impl Body {
    /// `"identify"`, or the event's source name.
    fn kind(&self) -> &'static str {
        match self {
            Body::Identify(_) => "identify",
            Body::SessionStarted => "Session Started",
            Body::MessageClicked { .. } => "Message Clicked",
            Body::ProductViewed { .. } => "Product Viewed",
            Body::ProductAdded(_) => "Product Added",
            Body::CartViewed { .. } => "Cart Viewed",
            Body::StockAlertRequested { .. } => "Stock Alert Requested",
            Body::OrderCompleted { .. } => "Order Completed",
            Body::OrderCancelled { .. } => "Order Cancelled",
            Body::OrderDelivered { .. } => "Order Delivered",
            Body::OrderIssueReported { .. } => "Order Issue Reported",
            Body::OrderRefunded { .. } => "Order Refunded",
            Body::ProductReviewed { .. } => "Product Reviewed",
            Body::PointsEarned { .. } => "Points Earned",
            Body::PointsRedeemed { .. } => "Points Redeemed",
            Body::SubscriptionRenewed { .. } => "Subscription Renewed",
            Body::ReferralShared { .. } => "Referral Shared",
            Body::BackInStock { .. } => "Back In Stock",
        }
    }
}

/// The traits an `identify` record sets; `None` leaves a trait as it was.
#[derive(Debug, Clone, Default)]
struct Traits {
    email: Option<String>,
    first_name: Option<&'static str>,
    birthday: Option<NaiveDate>,
    timezone: Option<Tz>,
    tier: Option<&'static str>,
    email_opt_in: Option<bool>,
    sms_opt_in: Option<bool>,
    push_opt_in: Option<bool>,
    phone: Option<String>,
    subscription_renews_at: Option<i64>,
    referral_code: Option<String>,
}

/// The order of lines in a file: timestamp, then userId (catalog events, which have none,
/// first), then messageId, as text.
fn compare(a: &Record, b: &Record, width: usize) -> Ordering {
    a.at.cmp(&b.at)
        .then_with(|| a.customer.cmp(&b.customer))
        .then_with(|| {
            if a.customer.is_some() && a.seq < 1_000_000 && b.seq < 1_000_000 {
                // Zero-padded to six digits: the text order is the number order.
                a.seq.cmp(&b.seq)
            } else {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                message_id(a, width, &mut x);
                message_id(b, width, &mut y);
                x.cmp(&y)
            }
        })
}

/// `c000042-000017` (the customer's 17th record), or `stock-p017-000012` (a catalog event on
/// day 12).
fn message_id(record: &Record, width: usize, out: &mut Vec<u8>) {
    match (record.customer, &record.body) {
        (Some(c), _) => {
            out.push(b'c');
            padded(u64::from(c), width, out);
            out.push(b'-');
            padded(u64::from(record.seq), 6, out);
        }
        (None, Body::BackInStock { product }) => {
            out.extend_from_slice(b"stock-p");
            padded(u64::from(*product) + 1, 3, out);
            out.push(b'-');
            padded(u64::from(record.seq), 6, out);
        }
        (None, _) => {
            out.extend_from_slice(b"shop-");
            padded(u64::from(record.seq), 6, out);
        }
    }
}

/// `n` in decimal, with leading zeros up to `width` digits.
fn padded(mut n: u64, width: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    for slot in digits.iter_mut() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push(b'0');
    }
    out.extend(digits[..len].iter().rev());
}

/// Where a customer's records go: today's batch, or a later day's.
struct Sink<'a> {
    day_start: i64,
    period_end: i64,
    start: i64,
    batch: &'a mut Vec<Record>,
    pending: &'a mut BTreeMap<u32, Vec<Record>>,
    last_alert: &'a mut [i64],
}

impl Sink<'_> {
    fn push(&mut self, mut record: Record) {
        // Nothing is ever scheduled in the past; if it were, it would break the file order.
        record.at = record.at.max(self.day_start);
        if record.at >= self.period_end {
            return;
        }
        if record.at < self.day_start + DAY {
            self.batch.push(record);
        } else {
            let day = u32::try_from((record.at - self.start) / DAY).unwrap_or(u32::MAX);
            self.pending.entry(day).or_default().push(record);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Customers

const FIRST_NAMES: [(&str, &str); 62] = [
    ("Ada", "ada"),
    ("Aiko", "aiko"),
    ("Akira", "akira"),
    ("Alejandro", "alejandro"),
    ("Amara", "amara"),
    ("Amelia", "amelia"),
    ("Ana", "ana"),
    ("Anya", "anya"),
    ("Arjun", "arjun"),
    ("Astrid", "astrid"),
    ("Aylin", "aylin"),
    ("Björn", "bjorn"),
    ("Camille", "camille"),
    ("Carlos", "carlos"),
    ("Chen", "chen"),
    ("Chiara", "chiara"),
    ("Chloé", "chloe"),
    ("Dara", "dara"),
    ("Diego", "diego"),
    ("Elif", "elif"),
    ("Emma", "emma"),
    ("Fatima", "fatima"),
    ("Finn", "finn"),
    ("Freya", "freya"),
    ("Giulia", "giulia"),
    ("Hamza", "hamza"),
    ("Hana", "hana"),
    ("Ingrid", "ingrid"),
    ("Isla", "isla"),
    ("Jack", "jack"),
    ("James", "james"),
    ("Jana", "jana"),
    ("José", "jose"),
    ("Kai", "kai"),
    ("Kofi", "kofi"),
    ("Lars", "lars"),
    ("Leila", "leila"),
    ("Liam", "liam"),
    ("Lucía", "lucia"),
    ("Mateo", "mateo"),
    ("Maya", "maya"),
    ("Mei", "mei"),
    ("Mohammed", "mohammed"),
    ("Nadia", "nadia"),
    ("Noah", "noah"),
    ("Nora", "nora"),
    ("Oliver", "oliver"),
    ("Olivia", "olivia"),
    ("Oscar", "oscar"),
    ("Priya", "priya"),
    ("Rafael", "rafael"),
    ("Ravi", "ravi"),
    ("Sakura", "sakura"),
    ("Sami", "sami"),
    ("Sofia", "sofia"),
    ("Søren", "soren"),
    ("Tariq", "tariq"),
    ("Theo", "theo"),
    ("Wei", "wei"),
    ("Yuki", "yuki"),
    ("Zara", "zara"),
    ("Zoë", "zoe"),
];

const DOMAINS: [&str; 5] = [
    "example.com",
    "example.org",
    "example.net",
    "mail.example",
    "post.example",
];

const ZONES: [(Option<Tz>, u32); 7] = [
    (None, 10),
    (Some(Tz::Europe__London), 55),
    (Some(Tz::Europe__Paris), 9),
    (Some(Tz::Europe__Berlin), 8),
    (Some(Tz::America__New_York), 10),
    (Some(Tz::Asia__Tokyo), 4),
    (Some(Tz::Australia__Sydney), 4),
];

const TIERS: [(&str, u32); 4] = [("standard", 72), ("silver", 16), ("gold", 9), ("vip", 3)];

/// Subscription plans: name and monthly price in pence.
const PLANS: [(&str, u32); 2] = [("monthly-box", 1900), ("coffee-club", 1250)];

const ISSUES: [(&str, u32); 3] = [("damaged", 5), ("wrong_item", 3), ("missing_item", 2)];

const SHARE_CHANNELS: [&str; 4] = ["email", "whatsapp", "link", "sms"];

/// The moments of `campaigns/`, for the clicks on their messages.
const MOMENT_IDS: [&str; 12] = [
    "apology_outreach",
    "back_in_stock",
    "birthday_spark",
    "browse_drift",
    "cart_wobble",
    "holiday_cutoff",
    "referral_nudge",
    "renewal_heads_up",
    "reward_unlock",
    "service_recovery",
    "social_proof",
    "vip_surprise",
];

/// When people shop, by local hour: lunchtime and evenings.
const HOUR_WEIGHTS: [u32; 24] = [
    4, 2, 1, 1, 1, 2, 4, 8, 12, 14, 16, 16, 20, 20, 16, 16, 16, 18, 22, 28, 32, 30, 20, 10,
];

const RATINGS: [(u8, u32); 5] = [(5, 45), (4, 30), (3, 12), (2, 8), (1, 5)];
const RATINGS_AFTER_ISSUE: [(u8, u32); 5] = [(1, 40), (2, 35), (3, 15), (4, 7), (5, 3)];

/// Points for a review, and what a reward costs.
const REVIEW_POINTS: u32 = 25;
const REWARD_POINTS: i64 = 500;
/// Lifetime spend that makes a VIP, in pence.
const VIP_SPEND: u64 = 100_000;

/// One customer's state between days. Small: there may be millions.
struct Customer {
    index: u32,
    rng: Rng,
    /// The day of the first record (0 for customers from before the period).
    join_day: u32,
    /// The first `identify`, for a customer who appears during the period.
    signup: Option<Box<Traits>>,
    tz: Option<Tz>,
    /// Sessions per day, on an ordinary day.
    rate: f64,
    /// Chance to add a product seen (in stock) to the cart.
    add_rate: f64,
    /// Chance to order a cart filled in the session.
    order_rate: f64,
    big_spender: bool,
    email_opt_in: bool,
    sms_opt_in: bool,
    push_opt_in: bool,
    has_phone: bool,
    referral: bool,
    vip: bool,
    plan: u8,
    renews_at: Option<i64>,
    seq: u32,
    orders: u32,
    spend: u64,
    /// Points that count now, and points earned at a later instant (already scheduled).
    points: i64,
    points_later: Vec<(i64, i64)>,
    cart: Vec<Line>,
    cart_since: i64,
    /// Stock alerts asked for: product, back in stock at.
    alerts: Vec<(u16, i64)>,
    /// The last record's instant, so sessions do not overlap.
    busy_until: i64,
}

impl Customer {
    /// A customer, and the first `identify` if they are there from the start.
    fn new(world: &World, index: u32) -> (Customer, Option<Record>) {
        let mut rng = Rng::new(world.seed, STREAM_CUSTOMER, u64::from(index));
        let from_start = world.days <= 1 || rng.chance(0.75);
        let join_day = if from_start {
            0
        } else {
            1 + rng.below(u64::from(world.days - 1)) as u32
        };
        let big_spender = rng.chance(0.04);
        let rate = if big_spender {
            rng.weighted(&[(0.6, 1), (0.8, 1), (1.0, 1)], 0.8)
        } else {
            rng.weighted(
                &[
                    (0.03, 15),
                    (0.12, 25),
                    (0.25, 25),
                    (0.4, 20),
                    (0.6, 10),
                    (0.9, 5),
                ],
                0.25,
            )
        };
        let add_rate = if big_spender {
            0.3
        } else {
            rng.weighted(&[(0.06, 3), (0.12, 4), (0.2, 3)], 0.12)
        };
        let order_rate = if big_spender {
            0.8
        } else {
            rng.weighted(&[(0.3, 3), (0.5, 4), (0.7, 3)], 0.5)
        };
        let named = rng.chance(0.95);
        let (first_name, slug) = rng.pick(&FIRST_NAMES, ("Ada", "ada"));
        let first_name = named.then_some(first_name);
        let domain = rng.pick(&DOMAINS, "example.com");
        let email = match first_name {
            Some(_) => format!("{slug}.{index}@{domain}"),
            None => format!("customer{index}@{domain}"),
        };
        let birthday = if rng.chance(0.012) {
            // Leap-day birthdays: celebrated on 28 February in other years.
            NaiveDate::from_ymd_opt(1960 + 4 * rng.range(0, 11) as i32, 2, 29)
        } else if rng.chance(0.8) {
            let year = rng.range(1950, 2006) as i32;
            NaiveDate::from_yo_opt(year, rng.range(1, 365) as u32)
        } else {
            None
        };
        let tz = rng.weighted(&ZONES, None);
        let tier = rng.weighted(&TIERS, "standard");
        let has_phone = rng.chance(if big_spender { 0.7 } else { 0.45 });
        let sms_opt_in = has_phone && rng.chance(0.35);
        let email_opt_in = rng.chance(0.7);
        let push_opt_in = rng.chance(0.4);
        let referral = rng.chance(0.7);
        let code = referral.then(|| {
            let mut code = match first_name {
                Some(_) => slug.to_ascii_uppercase(),
                None => "SHOP".to_string(),
            };
            code.push('-');
            for _ in 0..4 {
                let alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
                let i = rng.below(alphabet.len() as u64) as usize;
                code.push(char::from(alphabet.get(i).copied().unwrap_or(b'X')));
            }
            code
        });
        let subscriber = rng.chance(if big_spender { 0.3 } else { 0.08 });
        let plan = rng.below(PLANS.len() as u64) as u8;
        let joined_at = world.day_start(join_day);
        let renews_at =
            subscriber.then(|| joined_at + rng.range(2 * DAY, 30 * DAY) + rng.range(0, DAY - 1));
        let phone = has_phone.then(|| phone_number(tz, &mut rng));
        let traits = Traits {
            email: Some(email),
            first_name,
            birthday,
            timezone: tz,
            tier: Some(tier),
            email_opt_in: Some(email_opt_in),
            sms_opt_in: Some(sms_opt_in),
            push_opt_in: Some(push_opt_in),
            phone,
            subscription_renews_at: renews_at,
            referral_code: code,
        };
        let mut customer = Customer {
            index,
            rng,
            join_day,
            signup: None,
            tz,
            rate,
            add_rate,
            order_rate,
            big_spender,
            email_opt_in,
            sms_opt_in,
            push_opt_in,
            has_phone,
            referral,
            vip: tier == "vip",
            plan,
            renews_at,
            seq: 0,
            orders: 0,
            spend: 0,
            points: 0,
            points_later: Vec::new(),
            cart: Vec::new(),
            cart_since: 0,
            alerts: Vec::new(),
            busy_until: i64::MIN,
        };
        let first = if from_start {
            Some(customer.record(world.start, Body::Identify(Box::new(traits))))
        } else {
            customer.signup = Some(Box::new(traits));
            None
        };
        (customer, first)
    }

    fn record(&mut self, at: i64, body: Body) -> Record {
        self.seq += 1;
        Record {
            at,
            customer: Some(self.index),
            seq: self.seq,
            body,
        }
    }

    fn emit(&mut self, sink: &mut Sink, at: i64, body: Body) {
        let record = self.record(at, body);
        sink.push(record);
    }

    /// Seconds east of UTC of the customer's local time around `at` (London for customers
    /// without a time zone, as the schema's default).
    fn offset(&self, at: i64) -> i64 {
        let tz = self.tz.unwrap_or(Tz::Europe__London);
        DateTime::from_timestamp(at, 0).map_or(0, |t| {
            i64::from(
                tz.offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc(),
            )
        })
    }

    /// The instant in the UTC day starting at `day_start` that is `local` seconds past
    /// midnight in the customer's local time (wrapping round, so it stays in that UTC day).
    fn local(&self, day_start: i64, local: i64) -> i64 {
        let offset = self.offset(day_start + 12 * HOUR);
        day_start + (local - offset).rem_euclid(DAY)
    }

    fn local_time_of_day(&mut self) -> i64 {
        let hour = self.rng.weighted(&HOUR_WEIGHTS_TABLE, 12);
        hour * HOUR + self.rng.range(0, HOUR - 1)
    }

    fn simulate_day(&mut self, world: &World, day: u32, sink: &mut Sink) {
        if day < self.join_day {
            return;
        }
        let day_start = world.day_start(day);
        let featured = world.featured(day);
        let mut lambda = self.rate * world.season(day);
        if featured.is_some() {
            lambda *= 1.2;
        }
        let p = (lambda / 4.0).min(1.0);
        let mut sessions: Vec<i64> = Vec::new();
        for _ in 0..4 {
            if self.rng.chance(p) {
                let t = self.local_time_of_day();
                sessions.push(self.local(day_start, t));
            }
        }
        if let Some(traits) = self.signup.take() {
            // The first visit: sign up, then browse (the identify is the first record).
            let t = self.local_time_of_day();
            let at = self.local(day_start, t).min(day_start + DAY - 2 * HOUR);
            self.emit(sink, at, Body::Identify(traits));
            sessions.retain(|&s| s > at + 5);
            sessions.push(at + 5);
        } else if day > self.join_day {
            self.change_traits(day_start, sink);
        }
        sessions.sort_unstable();

        if let Some(renews) = self.renews_at {
            if renews >= day_start && renews < day_start + DAY {
                let next = renews + 30 * DAY;
                self.emit(sink, renews, Body::SubscriptionRenewed { plan: self.plan });
                let traits = Traits {
                    subscription_renews_at: Some(next),
                    ..Traits::default()
                };
                self.emit(sink, renews + MINUTE, Body::Identify(Box::new(traits)));
                self.renews_at = Some(next);
            }
        }

        for start in sessions {
            let start = start.max(self.busy_until + 20 * MINUTE);
            if start >= day_start + DAY - 30 * MINUTE {
                continue;
            }
            let end = self.session(world, day, start, sink);
            self.busy_until = end;
        }
    }

    /// Now and then a customer unsubscribes from email, opts in to texts or to push.
    fn change_traits(&mut self, day_start: i64, sink: &mut Sink) {
        let mut traits = Traits::default();
        let mut changed = false;
        if self.email_opt_in && self.rng.chance(0.0015) {
            self.email_opt_in = false;
            traits.email_opt_in = Some(false);
            changed = true;
        } else if !self.email_opt_in && self.rng.chance(0.001) {
            self.email_opt_in = true;
            traits.email_opt_in = Some(true);
            changed = true;
        }
        if !self.sms_opt_in && self.rng.chance(0.002) {
            self.sms_opt_in = true;
            traits.sms_opt_in = Some(true);
            if !self.has_phone {
                self.has_phone = true;
                traits.phone = Some(phone_number(self.tz, &mut self.rng));
            }
            changed = true;
        }
        if !self.push_opt_in && self.rng.chance(0.003) {
            self.push_opt_in = true;
            traits.push_opt_in = Some(true);
            changed = true;
        }
        if changed {
            let local = self.rng.range(8 * HOUR, 22 * HOUR);
            let at = self.local(day_start, local);
            self.emit(sink, at, Body::Identify(Box::new(traits)));
        }
    }

    /// One visit; returns when it ended.
    fn session(&mut self, world: &World, day: u32, start: i64, sink: &mut Sink) -> i64 {
        let mut now = start;
        if self.rng.chance(0.04) {
            let moment = self.rng.below(MOMENT_IDS.len() as u64) as u8;
            let send = self
                .rng
                .chance(0.5)
                .then(|| ClickedSend::Other(self.rng.next()));
            self.emit(sink, now, Body::MessageClicked { moment, send });
            now += self.rng.range(1, 5);
        }
        self.emit(sink, now, Body::SessionStarted);
        now += self.rng.range(5, 40);
        if !self.cart.is_empty() && now - self.cart_since > 7 * DAY {
            self.cart.clear();
        }
        self.mature_points(now);

        // Deep browsing: many products, nothing in the cart.
        let deep = self.rng.chance(0.08);
        let views = if deep {
            self.rng.range(5, 11)
        } else {
            self.rng
                .weighted(&[(1, 30), (2, 25), (3, 20), (4, 14), (5, 7), (6, 4)], 2)
        };
        // What brings them: a product they asked about that is back, or today's deal.
        let mut first: Option<(u16, f64)> = None;
        if let Some(i) = self
            .alerts
            .iter()
            .position(|&(_, back)| back <= now && now < back + 7 * DAY)
        {
            let (product, back) = self.alerts.swap_remove(i);
            if self.rng.chance(0.7) {
                first = Some((product, 0.5));
                // Most came through the "back in stock" message.
                if self.rng.chance(0.6) {
                    let day = u32::try_from((back - sink.start) / DAY).unwrap_or(0);
                    let moment = MOMENT_IDS
                        .iter()
                        .position(|m| *m == "back_in_stock")
                        .unwrap_or(0) as u8;
                    let send = Some(ClickedSend::BackInStock { product, day });
                    self.emit(sink, now, Body::MessageClicked { moment, send });
                }
            }
        }
        self.alerts.retain(|&(_, back)| now < back + 7 * DAY);
        if first.is_none() {
            if let Some(deal) = world.featured(day) {
                if self.rng.chance(0.45) {
                    first = Some((deal, 0.4));
                }
            }
        }

        let mut added = false;
        let mut deal_in_cart = false;
        for i in 0..views {
            let (product, add_rate) = match first.take() {
                Some(intent) if i == 0 => intent,
                _ => (self.browse(world), self.add_rate),
            };
            let price = world.price(product, day);
            self.emit(sink, now, Body::ProductViewed { product, price });
            if let Some((_, back)) = world.outage(product, now) {
                let asked = self.alerts.iter().any(|&(p, _)| p == product);
                if !asked && self.rng.chance(0.2) {
                    now += self.rng.range(10, 40);
                    self.emit(sink, now, Body::StockAlertRequested { product });
                    if let Some(last) = sink.last_alert.get_mut(product as usize) {
                        *last = (*last).max(now);
                    }
                    self.alerts.push((product, back));
                }
            } else if !deep && self.rng.chance(add_rate) {
                now += self.rng.range(15, 90);
                let quantity = if self.big_spender {
                    self.rng.weighted(&[(1, 6), (2, 3), (3, 1)], 1)
                } else {
                    self.rng.weighted(&[(1, 16), (2, 3), (3, 1)], 1)
                };
                let line = Line {
                    product,
                    quantity,
                    price,
                };
                self.emit(sink, now, Body::ProductAdded(line));
                if self.cart.is_empty() {
                    self.cart_since = now;
                }
                self.cart.push(line);
                added = true;
                deal_in_cart |= world.featured(day) == Some(product);
            }
            now += if deep {
                self.rng.range(45, 200)
            } else {
                self.rng.range(20, 150)
            };
        }
        if deep || self.cart.is_empty() {
            return now;
        }
        let value: u32 = self.cart.iter().map(line_total).sum();
        if added || self.rng.chance(0.3) {
            if self.rng.chance(0.65) {
                self.emit(sink, now, Body::CartViewed { value });
                now += self.rng.range(10, 60);
            }
            let p = if deal_in_cart {
                0.85
            } else if added {
                self.order_rate
            } else {
                // Back for a cart left earlier.
                0.4
            };
            if self.rng.chance(p) {
                now += self.rng.range(MINUTE, 10 * MINUTE);
                self.order(world, now, sink);
                now += self.rng.range(10, 60);
            }
        }
        now
    }

    /// A product to look at: popular ones more often; big spenders lean to dearer ones.
    fn browse(&mut self, world: &World) -> u16 {
        let a = world.catalog.sample(&mut self.rng);
        if self.big_spender {
            let b = world.catalog.sample(&mut self.rng);
            if world.catalog.price(b) > world.catalog.price(a) {
                return b;
            }
        }
        a
    }

    fn mature_points(&mut self, now: i64) {
        let mut matured = 0;
        self.points_later.retain(|&(at, points)| {
            if at <= now {
                matured += points;
                false
            } else {
                true
            }
        });
        self.points += matured;
    }

    /// Checkout: maybe spend a reward, order, and everything that follows from the order.
    fn order(&mut self, world: &World, at: i64, sink: &mut Sink) {
        let lines = std::mem::take(&mut self.cart);
        let mut total: u32 = lines.iter().map(line_total).sum();
        self.mature_points(at);
        let mut now = at;
        if self.points >= REWARD_POINTS && total >= 1_500 && self.rng.chance(0.6) {
            self.points -= REWARD_POINTS;
            self.emit(
                sink,
                now,
                Body::PointsRedeemed {
                    points: REWARD_POINTS as u32,
                },
            );
            total -= 500;
            now += self.rng.range(5, 20);
        }
        self.orders += 1;
        let order = self.orders;
        let spend_before = self.spend;
        self.spend += u64::from(total);
        self.emit(
            sink,
            now,
            Body::OrderCompleted {
                order,
                total,
                lines: lines.clone().into_boxed_slice(),
            },
        );
        if spend_before < VIP_SPEND && self.spend >= VIP_SPEND && !self.vip {
            // The shop upgrades big spenders a day or two later.
            self.vip = true;
            let traits = Traits {
                tier: Some("vip"),
                ..Traits::default()
            };
            let upgrade = now + self.rng.range(DAY, 2 * DAY);
            self.emit(sink, upgrade, Body::Identify(Box::new(traits)));
        }
        if self.rng.chance(0.03) {
            let cancelled = now + self.rng.range(5 * MINUTE, 100 * MINUTE);
            self.emit(sink, cancelled, Body::OrderCancelled { order, total });
            return;
        }
        let points = total / 100;
        if points > 0 {
            self.emit(sink, now + 3, Body::PointsEarned { points });
            self.points_later.push((now + 3, i64::from(points)));
        }

        // Delivery: two to four days, or late (one order in ten).
        let late = self.rng.chance(0.1);
        let transit = if late {
            self.rng.range(5, 8)
        } else {
            self.rng.range(2, 4)
        };
        let delivery_day = world.day_of(now) + transit as u32;
        let local = self.rng.range(8 * HOUR, 19 * HOUR);
        let delivered = self.local(world.day_start(delivery_day), local);
        if late && self.rng.chance(0.5) {
            let asked = delivered - self.rng.range(12 * HOUR, 48 * HOUR);
            self.emit(
                sink,
                asked,
                Body::OrderIssueReported {
                    order,
                    issue: "not_arrived",
                },
            );
        }
        self.emit(sink, delivered, Body::OrderDelivered { order, late });

        // Problems after delivery: a refund, or a replacement delivered.
        let mut unhappy = late;
        if self.rng.chance(0.05) {
            unhappy = true;
            let issue = self.rng.weighted(&ISSUES, "damaged");
            let reported = delivered + self.rng.range(HOUR, 36 * HOUR);
            self.emit(sink, reported, Body::OrderIssueReported { order, issue });
            if self.rng.chance(0.55) {
                let amount = if issue == "damaged" || lines.len() == 1 {
                    total
                } else {
                    lines.iter().map(line_total).max().unwrap_or(total)
                };
                let refunded = reported + self.rng.range(20 * HOUR, 3 * DAY);
                self.emit(sink, refunded, Body::OrderRefunded { order, amount });
            } else {
                let day = world.day_of(reported) + self.rng.range(2, 4) as u32;
                let local = self.rng.range(8 * HOUR, 19 * HOUR);
                let again = self.local(world.day_start(day), local);
                self.emit(sink, again, Body::OrderDelivered { order, late: false });
            }
        } else if self.rng.chance(0.03) {
            // A return: one item sent back.
            let amount = lines.first().map_or(total, |l| l.price).min(total);
            let refunded = delivered + self.rng.range(3 * DAY, 14 * DAY);
            self.emit(sink, refunded, Body::OrderRefunded { order, amount });
        }

        if self.rng.chance(if unhappy { 0.5 } else { 0.3 }) {
            let i = self.rng.below(lines.len() as u64) as usize;
            if let Some(line) = lines.get(i) {
                let rating = if unhappy {
                    self.rng.weighted(&RATINGS_AFTER_ISSUE, 2)
                } else {
                    self.rng.weighted(&RATINGS, 5)
                };
                let reviewed = delivered + self.rng.range(DAY, 10 * DAY);
                self.emit(
                    sink,
                    reviewed,
                    Body::ProductReviewed {
                        product: line.product,
                        rating,
                    },
                );
                self.emit(
                    sink,
                    reviewed + 2,
                    Body::PointsEarned {
                        points: REVIEW_POINTS,
                    },
                );
                self.points_later
                    .push((reviewed + 2, i64::from(REVIEW_POINTS)));
            }
        }
        if self.referral && !unhappy && self.rng.chance(0.08) {
            let channel = self.rng.pick(&SHARE_CHANNELS, "link");
            let shared = delivered + self.rng.range(DAY, 6 * DAY);
            self.emit(sink, shared, Body::ReferralShared { channel });
        }
    }
}

/// `HOUR_WEIGHTS` as (hour, weight) pairs.
const HOUR_WEIGHTS_TABLE: [(i64, u32); 24] = {
    let mut table = [(0i64, 0u32); 24];
    let mut h = 0;
    while h < 24 {
        table[h] = (h as i64, HOUR_WEIGHTS[h]);
        h += 1;
    }
    table
};

fn line_total(line: &Line) -> u32 {
    line.price * u32::from(line.quantity)
}

/// A phone number from the ranges set aside for fiction (UK 07700 900xxx, US 202-555-01xx,
/// France 06 39 98 xx xx, Australia 0491 570 xxx).
fn phone_number(tz: Option<Tz>, rng: &mut Rng) -> String {
    match tz {
        Some(Tz::America__New_York) => format!("+1202555{:04}", 100 + rng.below(100)),
        Some(Tz::Europe__Paris) => format!("+3363998{:04}", rng.below(10_000)),
        Some(Tz::Australia__Sydney) => format!("+61491570{:03}", rng.below(1_000)),
        _ => format!("+447700900{:03}", rng.below(1_000)),
    }
}

// ---------------------------------------------------------------------------------------
// Output

/// Which event file each day goes to.
struct Shard {
    /// Relative to the output directory: `events/2026-11.ndjson.gz`.
    name: String,
    first: u32,
    /// One past the last day.
    end: u32,
}

/// Whole months per file, or, when a month would hold more than about
/// [`RECORDS_PER_FILE`] records, spans of days that start again on the 1st.
fn plan_shards(world: &World, options: &SampleOptions) -> Vec<Shard> {
    let per_day = options.customers.saturating_mul(2).max(1);
    let span = (RECORDS_PER_FILE / per_day).clamp(1, 31) as u32;
    let mut shards: Vec<Shard> = Vec::new();
    for day in 0..options.days {
        let date = world.date(day);
        let new = match shards.last() {
            None => true,
            Some(last) => date.day() == 1 || day - last.first >= span,
        };
        if new {
            let name = if span >= 31 {
                format!("events/{}.ndjson.gz", date.format("%Y-%m"))
            } else {
                format!("events/{}.ndjson.gz", date.format("%Y-%m-%d"))
            };
            shards.push(Shard {
                name,
                first: day,
                end: day + 1,
            });
        } else if let Some(last) = shards.last_mut() {
            last.end = day + 1;
        }
    }
    shards
}

/// Remove event files of an earlier run that this one does not write.
fn remove_stale(events_dir: &Path, shards: &[Shard]) -> io::Result<()> {
    let entries = fs::read_dir(events_dir).map_err(|e| with_path(e, events_dir))?;
    let mut stale = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = shards.iter().any(|s| s.name == format!("events/{name}"));
        if !ours && looks_like_shard(&name) && entry.path().is_file() {
            stale.push(entry.path());
        }
    }
    stale.sort();
    for path in stale {
        fs::remove_file(&path).map_err(|e| with_path(e, &path))?;
    }
    Ok(())
}

/// `YYYY-MM.ndjson.gz` or `YYYY-MM-DD.ndjson.gz`.
fn looks_like_shard(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".ndjson.gz") else {
        return false;
    };
    let pattern: &[u8] = match stem.len() {
        7 => b"9999-99",
        10 => b"9999-99-99",
        _ => return false,
    };
    stem.bytes().zip(pattern).all(|(c, &p)| {
        if p == b'-' {
            c == b'-'
        } else {
            c.is_ascii_digit()
        }
    })
}

struct GzFile {
    path: PathBuf,
    encoder: GzEncoder<BufWriter<File>>,
}

impl GzFile {
    fn create(path: &Path, level: u32) -> io::Result<GzFile> {
        let file = File::create(path).map_err(|e| with_path(e, path))?;
        // No file name, no modification time: the same data gives the same bytes.
        let encoder = GzBuilder::new().mtime(0).write(
            BufWriter::with_capacity(1 << 20, file),
            Compression::new(level),
        );
        Ok(GzFile {
            path: path.to_path_buf(),
            encoder,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.encoder
            .write_all(bytes)
            .map_err(|e| with_path(e, &self.path))
    }

    fn finish(self) -> io::Result<()> {
        let path = self.path;
        let mut inner = self.encoder.finish().map_err(|e| with_path(e, &path))?;
        inner.flush().map_err(|e| with_path(e, &path))
    }
}

/// Records written, by kind and by file.
#[derive(Default)]
struct Counts {
    by_kind: BTreeMap<&'static str, u64>,
    customers: u64,
    /// Per shard, in order.
    events: Vec<u64>,
}

/// Turns records into JSON lines.
struct Renderer<'a> {
    world: &'a World,
    /// Digits of customer numbers in user ids (`c000042`).
    width: usize,
    /// Per day: `"2026-11-20T`.
    dates: Vec<String>,
    /// Per product: `{"product_id":"p001","price":` and `,"category":"home","name":"Oak Vase"}`.
    product_head: Vec<String>,
    product_tail: Vec<String>,
    /// Per product: the id and the name as JSON strings.
    ids: Vec<String>,
    names: Vec<String>,
}

impl<'a> Renderer<'a> {
    fn new(world: &'a World, options: &SampleOptions) -> Renderer<'a> {
        let digits = options.customers.saturating_sub(1).max(1).ilog10() as usize + 1;
        let products = &world.catalog.products;
        Renderer {
            ids: products.iter().map(|p| json_string(&p.id)).collect(),
            names: products.iter().map(|p| json_string(&p.name)).collect(),
            world,
            width: digits.max(6),
            dates: (0..options.days)
                .map(|d| format!("\"{}T", world.date(d).format("%Y-%m-%d")))
                .collect(),
            product_head: products
                .iter()
                .map(|p| format!("{{\"product_id\":{},\"price\":", json_string(&p.id)))
                .collect(),
            product_tail: products
                .iter()
                .map(|p| {
                    format!(
                        ",\"category\":{},\"name\":{}}}",
                        json_string(p.category),
                        json_string(&p.name)
                    )
                })
                .collect(),
        }
    }

    fn record(&self, record: &Record, out: &mut Vec<u8>) {
        let body = &record.body;
        let identify = matches!(body, Body::Identify(_));
        out.extend_from_slice(if identify {
            b"{\"type\":\"identify\",\"messageId\":\""
        } else {
            b"{\"type\":\"track\",\"messageId\":\""
        });
        message_id(record, self.width, out);
        out.push(b'"');
        if let Some(c) = record.customer {
            out.extend_from_slice(b",\"userId\":\"");
            self.user_id(c, out);
            out.push(b'"');
        }
        if !identify {
            out.extend_from_slice(b",\"event\":\"");
            out.extend_from_slice(body.kind().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b",\"timestamp\":");
        self.timestamp(record.at, out);
        match body {
            Body::Identify(traits) => {
                out.extend_from_slice(b",\"traits\":");
                self.traits(traits, out);
            }
            _ => {
                out.extend_from_slice(b",\"properties\":");
                self.properties(record, out);
            }
        }
        out.extend_from_slice(b"}\n");
    }

    fn user_id(&self, customer: u32, out: &mut Vec<u8>) {
        out.push(b'c');
        padded(u64::from(customer), self.width, out);
    }

    fn timestamp(&self, at: i64, out: &mut Vec<u8>) {
        let since = at - self.world.start;
        let date = usize::try_from(since.div_euclid(DAY))
            .ok()
            .and_then(|day| self.dates.get(day));
        match date {
            Some(date) => {
                out.extend_from_slice(date.as_bytes());
                let s = since.rem_euclid(DAY) as u32;
                two_digits(s / 3600, out);
                out.push(b':');
                two_digits(s / 60 % 60, out);
                out.push(b':');
                two_digits(s % 60, out);
                out.extend_from_slice(b"Z\"");
            }
            None => {
                let text = DateTime::from_timestamp(at, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                out.extend_from_slice(json_string(&text).as_bytes());
            }
        }
    }

    fn product(&self, product: u16, price: u32, out: &mut Vec<u8>) {
        let p = product as usize;
        if let (Some(head), Some(tail)) = (self.product_head.get(p), self.product_tail.get(p)) {
            out.extend_from_slice(head.as_bytes());
            money(price, out);
            out.extend_from_slice(tail.as_bytes());
        } else {
            out.extend_from_slice(b"{\"product_id\":\"unknown\",\"price\":");
            money(price, out);
            out.push(b'}');
        }
    }

    /// `"p017"`, quoted.
    fn product_id(&self, product: u16) -> &str {
        self.ids
            .get(product as usize)
            .map_or("\"unknown\"", String::as_str)
    }

    /// `"Oak Vase"`, quoted.
    fn product_name(&self, product: u16) -> &str {
        self.names
            .get(product as usize)
            .map_or("\"unknown\"", String::as_str)
    }

    fn order_id(&self, record: &Record, order: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"order_id\":\"ORD-");
        padded(u64::from(record.customer.unwrap_or(0)), self.width, out);
        out.push(b'-');
        padded(u64::from(order), 4, out);
        out.push(b'"');
    }

    fn properties(&self, record: &Record, out: &mut Vec<u8>) {
        match &record.body {
            Body::Identify(_) | Body::SessionStarted => out.extend_from_slice(b"{}"),
            Body::MessageClicked { moment, send } => {
                let moment = MOMENT_IDS.get(*moment as usize).copied().unwrap_or("");
                let _ = write!(out, "{{\"moment_id\":{}", json_string(moment));
                match send {
                    Some(ClickedSend::Other(send)) => {
                        let _ = write!(out, ",\"send_id\":\"{send:016x}\"");
                    }
                    Some(ClickedSend::BackInStock { product, day }) => {
                        let catalog = Record {
                            at: 0,
                            customer: None,
                            seq: *day,
                            body: Body::BackInStock { product: *product },
                        };
                        let (mut customer, mut event) = (Vec::new(), Vec::new());
                        if let Some(c) = record.customer {
                            customer.push(b'c');
                            padded(u64::from(c), self.width, &mut customer);
                        }
                        message_id(&catalog, self.width, &mut event);
                        let id = crate::schedule::send_id(
                            "back_in_stock",
                            &String::from_utf8_lossy(&customer),
                            &String::from_utf8_lossy(&event),
                        );
                        let _ = write!(out, ",\"send_id\":\"{id}\"");
                    }
                    None => {}
                }
                out.push(b'}');
            }
            Body::ProductViewed { product, price } => self.product(*product, *price, out),
            Body::ProductAdded(line) => {
                let _ = write!(
                    out,
                    "{{\"product_id\":{},\"name\":{},\"price\":",
                    self.product_id(line.product),
                    self.product_name(line.product)
                );
                money(line.price, out);
                let _ = write!(out, ",\"quantity\":{}}}", line.quantity);
            }
            Body::CartViewed { value } => {
                out.extend_from_slice(b"{\"value\":");
                money(*value, out);
                out.push(b'}');
            }
            Body::StockAlertRequested { product } | Body::BackInStock { product } => {
                let _ = write!(out, "{{\"product_id\":{}", self.product_id(*product));
                if matches!(record.body, Body::BackInStock { .. }) {
                    let _ = write!(out, ",\"name\":{}", self.product_name(*product));
                }
                out.push(b'}');
            }
            Body::OrderCompleted {
                order,
                total,
                lines,
            } => {
                out.push(b'{');
                self.order_id(record, *order, out);
                out.extend_from_slice(b",\"total\":");
                money(*total, out);
                out.extend_from_slice(b",\"currency\":\"GBP\",\"products\":[");
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = write!(
                        out,
                        "{{\"product_id\":{},\"name\":{},\"quantity\":{},\"price\":",
                        self.product_id(line.product),
                        self.product_name(line.product),
                        line.quantity
                    );
                    money(line.price, out);
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
            Body::OrderCancelled { order, total } => {
                out.push(b'{');
                self.order_id(record, *order, out);
                out.extend_from_slice(b",\"total\":");
                money(*total, out);
                out.push(b'}');
            }
            Body::OrderDelivered { order, late } => {
                out.push(b'{');
                self.order_id(record, *order, out);
                let _ = write!(out, ",\"late\":{late}}}");
            }
            Body::OrderIssueReported { order, issue } => {
                out.push(b'{');
                self.order_id(record, *order, out);
                let _ = write!(out, ",\"issue\":{}}}", json_string(issue));
            }
            Body::OrderRefunded { order, amount } => {
                out.push(b'{');
                self.order_id(record, *order, out);
                out.extend_from_slice(b",\"amount\":");
                money(*amount, out);
                out.push(b'}');
            }
            Body::ProductReviewed { product, rating } => {
                let _ = write!(
                    out,
                    "{{\"product_id\":{},\"rating\":{rating}}}",
                    self.product_id(*product)
                );
            }
            Body::PointsEarned { points } => {
                let _ = write!(out, "{{\"points\":{points}}}");
            }
            Body::PointsRedeemed { points } => {
                let _ = write!(
                    out,
                    "{{\"points\":{points},\"reward_id\":\"five-pounds-off\"}}"
                );
            }
            Body::SubscriptionRenewed { plan } => {
                let (name, price) = PLANS.get(*plan as usize).copied().unwrap_or(PLANS[0]);
                let _ = write!(out, "{{\"plan\":{},\"amount\":", json_string(name));
                money(price, out);
                out.push(b'}');
            }
            Body::ReferralShared { channel } => {
                let _ = write!(out, "{{\"channel\":{}}}", json_string(channel));
            }
        }
    }

    fn traits(&self, traits: &Traits, out: &mut Vec<u8>) {
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            out.push(if first { b'{' } else { b',' });
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        if let Some(v) = &traits.email {
            key(out, "email");
            out.extend_from_slice(json_string(v).as_bytes());
        }
        if let Some(v) = traits.first_name {
            key(out, "first_name");
            out.extend_from_slice(json_string(v).as_bytes());
        }
        if let Some(v) = traits.birthday {
            key(out, "birthday");
            let _ = write!(out, "\"{}\"", v.format("%Y-%m-%d"));
        }
        if let Some(v) = traits.timezone {
            key(out, "timezone");
            out.extend_from_slice(json_string(v.name()).as_bytes());
        }
        if let Some(v) = traits.tier {
            key(out, "tier");
            out.extend_from_slice(json_string(v).as_bytes());
        }
        for (name, value) in [
            ("email_opt_in", traits.email_opt_in),
            ("sms_opt_in", traits.sms_opt_in),
            ("push_opt_in", traits.push_opt_in),
        ] {
            if let Some(v) = value {
                key(out, name);
                let _ = write!(out, "{v}");
            }
        }
        if let Some(v) = &traits.phone {
            key(out, "phone");
            out.extend_from_slice(json_string(v).as_bytes());
        }
        if let Some(v) = traits.subscription_renews_at {
            key(out, "subscription_renews_at");
            self.timestamp(v, out);
        }
        if let Some(v) = &traits.referral_code {
            key(out, "referral_code");
            out.extend_from_slice(json_string(v).as_bytes());
        }
        if first {
            out.push(b'{');
        }
        out.push(b'}');
    }
}

fn two_digits(n: u32, out: &mut Vec<u8>) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Pence as a JSON number with two decimals: `24.00`, `12.99`.
fn money(pence: u32, out: &mut Vec<u8>) {
    padded(u64::from(pence / 100), 1, out);
    out.push(b'.');
    two_digits(pence % 100, out);
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

/// The README beside the data: what it is, how it was made, what is in it.
fn readme_text(
    options: &SampleOptions,
    world: &World,
    shards: &[Shard],
    counts: &Counts,
) -> String {
    let mut command = format!(
        "moments sample-data --customers {} --days {} --seed {}",
        options.customers, options.days, options.seed
    );
    if world.start_date != SampleOptions::default_start().date_naive() {
        command.push_str(&format!(" --start {}", world.start_date.format("%Y-%m-%d")));
    }
    command.push_str(" --out DIR");
    let period = if options.days == 0 {
        "no days at all".to_string()
    } else {
        format!(
            "the {} days from {} to {} (UTC)",
            options.days,
            world.start_date.format("%Y-%m-%d"),
            world.date(options.days - 1).format("%Y-%m-%d")
        )
    };
    let mut text = String::new();
    text.push_str("# Sample data: an imaginary online shop\n\n");
    text.push_str(
        "Synthetic customers and events of a small online shop, for trying the campaigns in \
         `campaigns/` and for benchmarks. Nobody in it is real: \
         the names are first names only, the emails use example domains and the phone \
         numbers come from ranges set aside for fiction.\n\n",
    );
    text.push_str(&format!(
        "It was made by\n\n    {command}\n\nand covers {period}. The same options give the \
         same files, byte for byte; another seed gives another shop. The first day defaults \
         to 2026-11-01, so that `--days 60` runs through Black Friday and the whole of \
         December 2026.\n\n"
    ));
    text.push_str("## Files\n\n");
    text.push_str(
        "Gzip-compressed newline-delimited JSON in the native `track` / `identify` shape, \
         each file sorted by `timestamp`, then `userId`, then `messageId`.\n\n",
    );
    text.push_str("| file | records | contents |\n|---|---:|---|\n");
    text.push_str(&format!(
        "| `customers.ndjson.gz` | {} | `identify` records: a customer's traits when they \
         first appear, then each change |\n",
        counts.customers
    ));
    for (i, shard) in shards.iter().enumerate() {
        let last = world.date(shard.end.saturating_sub(1));
        text.push_str(&format!(
            "| `{}` | {} | events of {} to {} |\n",
            shard.name,
            counts.events.get(i).copied().unwrap_or(0),
            world.date(shard.first).format("%Y-%m-%d"),
            last.format("%Y-%m-%d")
        ));
    }
    text.push_str("\n## Records by kind\n\n| kind | records |\n|---|---:|\n");
    for (kind, n) in &counts.by_kind {
        text.push_str(&format!("| {kind} | {n} |\n"));
    }
    text.push_str(&format!(
        "| **all** | {} |\n\n",
        counts.by_kind.values().sum::<u64>()
    ));
    text.push_str(
        "## What is in it\n\n\
         Each customer is simulated day by day from the seed and their own number, so \
         customer `c000042` behaves the same in a run of 1000 customers and in one of \
         100000.\n\n\
         - **Customers.** Three in four are there from the first instant; the others sign up \
         during the period. First names (sometimes none), emails, birthdays (some missing, \
         a few on 29 February), time zones (mostly Europe/London; Paris, Berlin, New York, \
         Tokyo, Sydney; one in ten none), tiers, email / SMS / push consents that change \
         over time, phone numbers for about half, referral codes for most, and monthly \
         subscriptions for some, whose `subscription_renews_at` moves on by 30 days at each \
         \"Subscription Renewed\". Big spenders are upgraded to the `vip` tier a day or two \
         after their orders pass £1000.\n\
         - **Shop.** 200 products in ten categories with prices and a long-tailed \
         popularity. Popular products sell out for a few days now and then; when one \
         comes back that somebody asked about, a catalog \"Back In Stock\" event (no \
         `userId`) is recorded. On about one day in four, and on Black Friday and Cyber \
         Monday, a popular product is on a one-day deal and dozens of customers buy it. \
         December is busier, until Christmas.\n\
         - **Behaviour.** Sessions at local lunchtimes and evenings; product views; deep \
         browsing (5 to 11 products in a few minutes, nothing added); carts, often \
         abandoned and sometimes ordered later; orders with their products, points earned \
         (1 per pound, 25 per review) and sometimes a 500-point reward redeemed; \
         cancellations; deliveries two to four days later, one in ten late; problems \
         reported (\"not_arrived\" before a late delivery, \"damaged\", \"wrong_item\", \
         \"missing_item\" after), followed by a refund or a replacement delivery; returns; \
         reviews (lower after a problem); stock alert requests for products out of stock; \
         referral shares; clicks on messages (\"Message Clicked\", with a moment id and \
         sometimes a made-up send id: the engine decides the real ones).\n\n\
         ## Which moments it exercises\n\n\
         | moment | what in the data makes it fire |\n|---|---|\n\
         | `apology_outreach` | \"Order Refunded\" after a problem or a return |\n\
         | `back_in_stock` | \"Back In Stock\" for a product the customer asked about (\"Stock Alert Requested\") |\n\
         | `birthday_spark` | birthdays falling in the period |\n\
         | `browse_drift` | deep browsing sessions |\n\
         | `cart_wobble` | carts of £20 or more not ordered within the hour |\n\
         | `holiday_cutoff` | browsing without ordering in the 14 days before 18 December |\n\
         | `referral_nudge` | on-time deliveries to customers with a referral code |\n\
         | `renewal_heads_up` | subscribers with a phone, 3 days before each renewal |\n\
         | `reward_unlock` | points balances passing 500 |\n\
         | `service_recovery` | late deliveries, and replacements after a reported problem |\n\
         | `social_proof` | views of the day's deal after 20 or more people bought it |\n\
         | `vip_surprise` | orders that take lifetime spend past £1000 (a few then cancelled) |\n",
    );
    text
}
