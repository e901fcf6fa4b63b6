//! Readable video titles, assembled from small word lists. A title says
//! nothing about a video's latent quality or clickbait propensity (so it
//! leaks no ground truth), only a little about its primary topic: each topic
//! has a fixed subject noun.

use rand::Rng;

use crate::random::index;

const ADJECTIVES: &[&str] = &[
    "Quiet",
    "Hidden",
    "Tiny",
    "Ancient",
    "Electric",
    "Wild",
    "Golden",
    "Frozen",
    "Midnight",
    "Crimson",
    "Lazy",
    "Curious",
    "Forgotten",
    "Brave",
    "Gentle",
    "Secret",
    "Endless",
    "Northern",
    "Urban",
    "Floating",
    "Rusty",
    "Silent",
    "Bright",
    "Strange",
    "Little",
    "Giant",
    "Clever",
    "Broken",
    "Perfect",
    "Simple",
];

const SUBJECTS: &[&str] = &[
    "Harbours",
    "Robots",
    "Gardens",
    "Volcanoes",
    "Recipes",
    "Trains",
    "Foxes",
    "Guitars",
    "Bridges",
    "Planets",
    "Markets",
    "Chess Openings",
    "Bicycles",
    "Lighthouses",
    "Sourdough",
    "Owls",
    "Rivers",
    "Castles",
    "Synthesizers",
    "Glaciers",
    "Beetles",
    "Kites",
    "Deserts",
    "Origami",
    "Submarines",
    "Mushrooms",
    "Telescopes",
    "Islands",
    "Pianos",
    "Forests",
    "Cameras",
    "Whales",
    "Circuits",
    "Pottery",
    "Mountains",
    "Typewriters",
    "Bees",
    "Caves",
    "Sailboats",
    "Noodles",
];

const FORMS: &[&str] = &[
    "{a} {s}",
    "{a} {s}, Explained",
    "A Day With {a} {s}",
    "How {a} {s} Work",
    "{n} {a} {s}",
    "The Story of {a} {s}",
    "{a} {s} in 10 Minutes",
    "Why {a} {s} Matter",
    "Building {a} {s}",
    "{a} {s}: A Field Guide",
];

const NUMBERS: &[&str] = &["Three", "Five", "Seven", "Ten", "Twelve", "Twenty"];

/// A title for a video whose primary topic is `topic`.
pub(crate) fn title<R: Rng + ?Sized>(rng: &mut R, topic: u16) -> String {
    let adjective = ADJECTIVES[index(rng, ADJECTIVES.len())];
    let form = FORMS[index(rng, FORMS.len())];
    let number = NUMBERS[index(rng, NUMBERS.len())];
    // Mostly the topic's own subject, sometimes another one.
    let subject = if index(rng, 4) == 0 {
        SUBJECTS[index(rng, SUBJECTS.len())]
    } else {
        SUBJECTS[usize::from(topic) % SUBJECTS.len()]
    };
    form.replace("{a}", adjective).replace("{s}", subject).replace("{n}", number)
}
