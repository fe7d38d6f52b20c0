//! Spectral core: affinity graphs and Fiedler vectors (spec/methods.md §B).
