"""Data: readers of datasets on disk (the CoOp layouts of the reference benchmarks, image
folders), the reference protocol's split rules, synthetic CLIP-like features and the
generated image world."""

from ..exceptions import DatasetError
from .coop import (BASE_TO_NEW_DATASETS, DATASETS, IMAGENET_VARIANTS, check_coop_dataset,
                   dataset_folder, dataset_spec, find_coop_datasets, load_coop_dataset,
                   read_imagenet_classnames)
from .folder import (IMG_EXTENSIONS, clean_class_name, find_images, list_images, load_image_folder,
                     read_class_names)
from .protocol import (base_new_classes, base_to_new_split, fewshot_indices,
                       imbalanced_fewshot_indices, long_tailed_counts, long_tailed_indices)
from .synthetic import make_clip_like_features
from .world import (COLOURS, PATTERNS, SHAPES, make_world_images, make_world_task,
                    render_world_image, world_classes, world_new_classes)

__all__ = [
    "BASE_TO_NEW_DATASETS", "COLOURS", "DATASETS", "DatasetError", "IMAGENET_VARIANTS",
    "IMG_EXTENSIONS", "PATTERNS", "SHAPES", "base_new_classes", "base_to_new_split",
    "check_coop_dataset",
    "clean_class_name", "dataset_folder", "dataset_spec", "fewshot_indices", "find_coop_datasets",
    "find_images", "imbalanced_fewshot_indices", "list_images", "load_coop_dataset",
    "load_image_folder", "long_tailed_counts", "long_tailed_indices",
    "make_clip_like_features", "make_world_images", "make_world_task", "read_class_names",
    "read_imagenet_classnames", "render_world_image", "world_classes", "world_new_classes",
]
