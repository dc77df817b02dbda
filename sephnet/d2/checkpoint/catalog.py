"""``catalog://`` paths: names of Caffe2-era pretrained models mapped to their download URLs.

Importing this module registers :class:`ModelCatalogHandler` with the core's ``PathManager``,
so ``catalog://ImageNetPretrained/MSRA/R-50`` can be used as ``MODEL.WEIGHTS``.
"""
import logging
from typing import Any, List

from sephnet.d2.utils.file_io import PathHandler, PathManager

logger = logging.getLogger(__name__)


class ModelCatalog:
    """Name -> URL of third-party (Caffe2 / Detectron) models.

    Two families:

    - ``ImageNetPretrained/<key of C2_IMAGENET_MODELS>``: ImageNet backbones. The MSRA models
      want ``RESNETS.STRIDE_IN_1X1=True``; their BN is fused into an affine transform, so load
      them into ``FrozenBN`` backbones only; all use ``PIXEL_STD=[1, 1, 1]``.
    - ``Caffe2Detectron/COCO/<key of C2_DETECTRON_MODELS>``: Detectron (Caffe2) COCO baselines.
    """

    S3_C2_DETECTRON_PREFIX = "https://dl.fbaipublicfiles.com/detectron"

    C2_IMAGENET_MODELS = {
        "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
        "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
        "FAIR/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
        "FAIR/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
        "FAIR/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
        "FAIR/X-101-64x4d": "ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl",
        "FAIR/X-152-32x8d-IN5k": "ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl",
    }

    C2_DETECTRON_PATH_FORMAT = "{prefix}/{url}/output/train/{dataset}/{type}/model_final.pkl"

    C2_DATASET_COCO = "coco_2014_train%3Acoco_2014_valminusminival"
    C2_DATASET_COCO_KEYPOINTS = "keypoints_coco_2014_train%3Akeypoints_coco_2014_valminusminival"

    C2_DETECTRON_MODELS = {
        "35857197/e2e_faster_rcnn_R-50-C4_1x": "35857197/12_2017_baselines/e2e_faster_rcnn_R-50-C4_1x.yaml.01_33_49.iAX0mXvW",  # noqa: E501
        "35857345/e2e_faster_rcnn_R-50-FPN_1x": "35857345/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_1x.yaml.01_36_30.cUF7QR7I",  # noqa: E501
        "35857890/e2e_faster_rcnn_R-101-FPN_1x": "35857890/12_2017_baselines/e2e_faster_rcnn_R-101-FPN_1x.yaml.01_38_50.sNxI7sX7",  # noqa: E501
        "36761737/e2e_faster_rcnn_X-101-32x8d-FPN_1x": "36761737/12_2017_baselines/e2e_faster_rcnn_X-101-32x8d-FPN_1x.yaml.06_31_39.5MIHi1fZ",  # noqa: E501
        "35858791/e2e_mask_rcnn_R-50-C4_1x": "35858791/12_2017_baselines/e2e_mask_rcnn_R-50-C4_1x.yaml.01_45_57.ZgkA7hPB",  # noqa: E501
        "35858933/e2e_mask_rcnn_R-50-FPN_1x": "35858933/12_2017_baselines/e2e_mask_rcnn_R-50-FPN_1x.yaml.01_48_14.DzEQe4wC",  # noqa: E501
        "35861795/e2e_mask_rcnn_R-101-FPN_1x": "35861795/12_2017_baselines/e2e_mask_rcnn_R-101-FPN_1x.yaml.02_31_37.KqyEK4tT",  # noqa: E501
        "36761843/e2e_mask_rcnn_X-101-32x8d-FPN_1x": "36761843/12_2017_baselines/e2e_mask_rcnn_X-101-32x8d-FPN_1x.yaml.06_35_59.RZotkLKI",  # noqa: E501
        "48616381/e2e_mask_rcnn_R-50-FPN_2x_gn": "GN/48616381/04_2018_gn_baselines/e2e_mask_rcnn_R-50-FPN_2x_gn_0416.13_23_38.bTlTI97Q",  # noqa: E501
        "37697547/e2e_keypoint_rcnn_R-50-FPN_1x": "37697547/12_2017_baselines/e2e_keypoint_rcnn_R-50-FPN_1x.yaml.08_42_54.kdzV35ao",  # noqa: E501
        "35998355/rpn_R-50-C4_1x": "35998355/12_2017_baselines/rpn_R-50-C4_1x.yaml.08_00_43.njH5oD9L",  # noqa: E501
        "35998814/rpn_R-50-FPN_1x": "35998814/12_2017_baselines/rpn_R-50-FPN_1x.yaml.08_06_03.Axg0r179",  # noqa: E501
        "36225147/fast_R-50-FPN_1x": "36225147/12_2017_baselines/fast_rcnn_R-50-FPN_1x.yaml.08_39_09.L3obSdQ2",  # noqa: E501
    }

    @staticmethod
    def get(name: str) -> str:
        """The URL of catalog entry ``name``.

        Raises:
            RuntimeError: (as detectron2) if the family prefix is unknown.
            KeyError: naming the entry and the known ones if the family is known but the model
                is not.
        """
        if name.startswith("Caffe2Detectron/COCO"):
            return ModelCatalog._get_c2_detectron_baseline(name)
        if name.startswith("ImageNetPretrained/"):
            return ModelCatalog._get_c2_imagenet_pretrained(name)
        raise RuntimeError(
            f"model not present in the catalog: {name} (expected a name starting with "
            "'ImageNetPretrained/' or 'Caffe2Detectron/COCO/')"
        )

    @staticmethod
    def _get_c2_imagenet_pretrained(name: str) -> str:
        key = name[len("ImageNetPretrained/") :]
        if key not in ModelCatalog.C2_IMAGENET_MODELS:
            raise KeyError(
                f"Unknown catalog model '{name}'; known: "
                f"{sorted('ImageNetPretrained/' + k for k in ModelCatalog.C2_IMAGENET_MODELS)}"
            )
        return "/".join([ModelCatalog.S3_C2_DETECTRON_PREFIX, ModelCatalog.C2_IMAGENET_MODELS[key]])

    @staticmethod
    def _get_c2_detectron_baseline(name: str) -> str:
        key = name[len("Caffe2Detectron/COCO/") :]
        if key not in ModelCatalog.C2_DETECTRON_MODELS:
            raise KeyError(
                f"Unknown catalog model '{name}'; known: "
                f"{sorted('Caffe2Detectron/COCO/' + k for k in ModelCatalog.C2_DETECTRON_MODELS)}"
            )
        is_keypoint = "keypoint_rcnn" in key
        dataset = ModelCatalog.C2_DATASET_COCO_KEYPOINTS if is_keypoint else ModelCatalog.C2_DATASET_COCO
        # this one baseline was stored under a different model type
        model_type = "rpn" if "35998355/rpn_R-50-C4_1x" in key else "generalized_rcnn"
        return ModelCatalog.C2_DETECTRON_PATH_FORMAT.format(
            prefix=ModelCatalog.S3_C2_DETECTRON_PREFIX,
            url=ModelCatalog.C2_DETECTRON_MODELS[key],
            type=model_type,
            dataset=dataset,
        )


class ModelCatalogHandler(PathHandler):
    """Resolves ``catalog://<name>`` through :class:`ModelCatalog` and the ``PathManager``."""

    PREFIX = "catalog://"

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        url = ModelCatalog.get(path[len(self.PREFIX) :])
        logger.info(f"Catalog entry {path} points to {url}")
        return PathManager.get_local_path(url, **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs: Any) -> Any:
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


PathManager.register_handler(ModelCatalogHandler())
