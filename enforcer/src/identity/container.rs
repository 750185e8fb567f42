//! Container and pod metadata read from the container runtimes' on-disk state.
