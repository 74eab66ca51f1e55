//! Owns duration strings ("500ms", "3s", "5m") (placeholder until implemented).
