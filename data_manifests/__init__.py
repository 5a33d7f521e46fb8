"""Folder-layout templates of the public benchmarks the paper uses (one YAML file each).

`ptg manifest build --dataset NAME --root DIR` reads the template and writes a manifest.
"""
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent
