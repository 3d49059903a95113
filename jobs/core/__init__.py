"""Pure logic: numbers and DataFrames in, decisions and statistics out; nothing here reads or writes storage."""
