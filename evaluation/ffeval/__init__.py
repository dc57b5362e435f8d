"""ffeval / ffbench: accuracy and speed of an exported model, measured through ffrt."""
