"""Datasets: Darknet's dataset files (:mod:`.darknet`), the training/evaluation loaders
(:mod:`.dataset`), converters (:mod:`.convert`), ``darknet-kd check`` (:mod:`.check`) and
the DriveSim benchmark (:mod:`.drivesim`)."""
from .darknet import (DataConfig, label_path, read_data_file, read_labels, read_list, read_names,
                      resolve_path, write_data_file, write_labels, write_list, write_names)

__all__ = ["DataConfig", "label_path", "read_data_file", "read_labels", "read_list", "read_names",
           "resolve_path", "write_data_file", "write_labels", "write_list", "write_names"]
