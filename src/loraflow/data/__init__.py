"""Data stages: read the user's file, clean it losslessly, render ChatML, split, tokenise once."""
