"""Human rank (HR), the study behind Tables 2-3's HR column: `stackgan hr build` samples a study
folder from trained text-to-image experiments (study.py), `stackgan hr serve` lets raters rank the
models' images in a browser (server.py, answers.py), `stackgan hr aggregate` turns the answers
into an `hr` metrics file (aggregate.py) that `stackgan report` places in the tables (tables.py).
"""
