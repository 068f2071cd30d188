"""Stage listing: the dataset as its annotations list it (each listed file's size and sha256), the file DVC hashes
in place of the dataset's folder (maivar.data.listed_files). Runs on every ``dvc repro``; reads only listed files,
and only those whose size, mtime or inode changed since it last read them."""

from maivar.core.stage import run_stage, stage_args
from maivar.data.listed_files import write_listing
from maivar.settings.base import read_params
from maivar.settings.data import DatasetSettings, PrepareSettings


def main() -> None:
    args = stage_args(__doc__, "listing")
    params = read_params(args.params)
    dataset = DatasetSettings.from_params(params)
    prepare = PrepareSettings.from_params(params)
    write_listing(args.listing, dataset, prepare.classes)


if __name__ == "__main__":
    run_stage(main)
