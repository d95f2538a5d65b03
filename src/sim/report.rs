//! The comparison table and the self-contained HTML report.
