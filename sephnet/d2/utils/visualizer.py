"""Drawing detections and annotations on images (for the demo, training visualisation and
dataset inspection).

A subset of ``detectron2.utils.visualizer``: boxes, labels, instance masks (bitmaps,
polygons or COCO RLE) and keypoints, drawn with matplotlib on an off-screen canvas.
Semantic/panoptic segmentation and rotated boxes are not supported. The drawing is meant
for people, not for numbers: colours and layout need not be pixel-identical to
detectron2's.
"""

from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import matplotlib.colors as mplc
import matplotlib.figure as mplfigure
import numpy as np
import pycocotools.mask as mask_util
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Circle, Polygon, Rectangle

from sephnet.d2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks

__all__ = ["ColorMode", "VisImage", "Visualizer"]

Color = Tuple[float, float, float]

# Instances smaller than this (output pixels) get their label outside, so it hides nothing.
_SMALL_AREA = 1000
_SHORT_HEIGHT = 40

# A fixed palette of distinguishable colours (RGB in [0, 1]); instances cycle through it
# unless the metadata provides per-class ``thing_colors``.
_PALETTE: List[Color] = [
    (0.000, 0.447, 0.741),
    (0.850, 0.325, 0.098),
    (0.929, 0.694, 0.125),
    (0.494, 0.184, 0.556),
    (0.466, 0.674, 0.188),
    (0.301, 0.745, 0.933),
    (0.635, 0.078, 0.184),
    (0.300, 0.300, 0.300),
    (1.000, 0.498, 0.000),
    (0.749, 0.749, 0.000),
    (0.000, 0.000, 1.000),
    (0.667, 0.000, 1.000),
    (0.333, 0.667, 0.000),
    (0.000, 0.667, 0.500),
    (1.000, 0.000, 0.498),
    (0.667, 0.333, 0.333),
    (0.333, 1.000, 0.667),
    (0.000, 0.333, 0.667),
]


class ColorMode(Enum):
    """How instances are coloured.

    IMAGE: each instance gets its own colour. SEGMENTATION: instances of one class share
    the class colour (``metadata.thing_colors``, 0-255 RGB). IMAGE_BW: like IMAGE, but the
    image is drawn in grey outside the predicted masks.
    """

    IMAGE = 0
    SEGMENTATION = 1
    IMAGE_BW = 2


class VisImage:
    """An RGB image with a matplotlib canvas to draw on; ``get_image()`` reads it back."""

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        """
        Args:
            img: RGB image [H, W, 3], values in [0, 255].
            scale: output size relative to the input.
        """
        self.img = img
        self.scale = scale
        self.height, self.width = img.shape[:2]
        fig = mplfigure.Figure(frameon=False)
        self.dpi = fig.get_dpi()
        # the small epsilon keeps matplotlib from rounding the pixel size down
        fig.set_size_inches(
            (self.width * scale + 1e-2) / self.dpi, (self.height * scale + 1e-2) / self.dpi
        )
        self.canvas = FigureCanvasAgg(fig)
        self.fig = fig
        self.ax = fig.add_axes([0.0, 0.0, 1.0, 1.0])
        self.ax.axis("off")
        self.reset_image(img)

    def reset_image(self, img: np.ndarray) -> None:
        """Replace the background picture (drawings stay)."""
        self.ax.imshow(
            img.astype("uint8"), extent=(0, self.width, self.height, 0), interpolation="nearest"
        )

    def save(self, filepath: str) -> None:
        """Write the drawing to an image file (format from the extension)."""
        self.fig.savefig(filepath)

    def get_image(self) -> np.ndarray:
        """Return the drawing as a uint8 RGB array [H * scale, W * scale, 3]."""
        self.canvas.draw()
        buffer = np.asarray(self.canvas.buffer_rgba())
        return buffer[:, :, :3].copy()


def _create_text_labels(
    classes: Optional[Sequence[int]],
    scores: Optional[Sequence[float]],
    class_names: Optional[Sequence[str]],
    is_crowd: Optional[Sequence[bool]] = None,
) -> Optional[List[str]]:
    """Labels such as ``"dog 97%"``; class ids are shown as numbers without class names."""
    labels: Optional[List[str]] = None
    if classes is not None:
        names = class_names if class_names else None
        labels = [names[c] if names is not None else str(c) for c in classes]
    if scores is not None:
        percents = ["{:.0f}%".format(float(s) * 100) for s in scores]
        labels = percents if labels is None else [f"{l} {p}" for l, p in zip(labels, percents)]
    if labels is not None and is_crowd is not None:
        labels = [l + ("|crowd" if crowd else "") for l, crowd in zip(labels, is_crowd)]
    return labels


def _mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
    """Outer and hole contours of a binary mask, each as a flat [x0, y0, x1, y1, ...] array."""
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask.astype(np.uint8)), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
    )
    # +0.5 puts the outline through pixel centres, matching how masks are rasterised
    return [c.reshape(-1).astype(np.float64) + 0.5 for c in contours if len(c) >= 3]


def _to_binary_mask(mask: Any, height: int, width: int) -> np.ndarray:
    """A uint8 [H, W] mask from a bitmap, a list of polygons or a COCO RLE dict."""
    if isinstance(mask, dict):
        if isinstance(mask["counts"], list):  # uncompressed RLE
            mask = mask_util.frPyObjects(mask, *mask["size"])
        return mask_util.decode(mask)[:, :]
    if isinstance(mask, (list, tuple)):
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1) for p in mask]
        rles = mask_util.frPyObjects([p.tolist() for p in polygons], height, width)
        return mask_util.decode(mask_util.merge(rles))
    mask = mask.numpy() if torch.is_tensor(mask) else np.asarray(mask)
    if mask.shape != (height, width):
        raise ValueError(f"A mask has shape {mask.shape}; the image is {(height, width)}.")
    return mask.astype(np.uint8)


class Visualizer:
    """Draws instance predictions or dataset annotations on one RGB image.

    Example::

        v = Visualizer(image_bgr[:, :, ::-1], MetadataCatalog.get("coco_2017_val"))
        out = v.draw_instance_predictions(outputs["instances"].to("cpu"))
        cv2.imwrite("out.jpg", out.get_image()[:, :, ::-1])
    """

    def __init__(
        self,
        img_rgb: Union[np.ndarray, torch.Tensor],
        metadata: Any = None,
        scale: float = 1.0,
        instance_mode: ColorMode = ColorMode.IMAGE,
    ):
        """
        Args:
            img_rgb: RGB image [H, W, 3] in [0, 255] (array or tensor).
            metadata: dataset metadata (``thing_classes``, ``thing_colors``) or None.
            scale: output size relative to the input.
            instance_mode: see :class:`ColorMode`.
        """
        if torch.is_tensor(img_rgb):
            img_rgb = img_rgb.cpu().numpy()
        self.img = np.asarray(img_rgb).clip(0, 255).astype(np.uint8)
        if metadata is None:
            from sephnet.d2.data.catalog import MetadataCatalog

            metadata = MetadataCatalog.get("__nonexist__")
        self.metadata = metadata
        self.output = VisImage(self.img, scale=scale)
        self._instance_mode = instance_mode
        # text scales with the image so labels stay legible on large pictures
        self._default_font_size = max(
            np.sqrt(self.output.height * self.output.width) // 90, 10 // scale
        )

    def draw_instance_predictions(self, predictions: Instances) -> VisImage:
        """Draw a model's ``Instances``: ``pred_boxes``, ``pred_classes``, ``scores`` and,
        when present, ``pred_masks`` [N, H, W] and ``pred_keypoints`` [N, K, 3]."""
        boxes = predictions.pred_boxes if predictions.has("pred_boxes") else None
        scores = predictions.scores.tolist() if predictions.has("scores") else None
        classes = predictions.pred_classes.tolist() if predictions.has("pred_classes") else None
        labels = _create_text_labels(classes, scores, self.metadata.get("thing_classes", None))
        keypoints = predictions.pred_keypoints if predictions.has("pred_keypoints") else None
        masks = list(np.asarray(predictions.pred_masks)) if predictions.has("pred_masks") else None

        colors, alpha = None, 0.5
        if self._instance_mode == ColorMode.SEGMENTATION and classes is not None:
            colors = self._class_colors(classes)
            alpha = 0.8
        if self._instance_mode == ColorMode.IMAGE_BW:
            keep = None
            if predictions.has("pred_masks"):
                keep = np.asarray(predictions.pred_masks).any(axis=0)
            self.output.reset_image(self._grayscale_image(keep))
            alpha = 0.3
        return self.overlay_instances(
            boxes=boxes,
            labels=labels,
            masks=masks,
            keypoints=keypoints,
            assigned_colors=colors,
            alpha=alpha,
        )

    def draw_dataset_dict(self, dic: Dict[str, Any]) -> VisImage:
        """Draw the ``annotations`` of one dataset dict (boxes in any ``bbox_mode``,
        ``segmentation`` polygons or RLE, ``keypoints``; crowd regions are labelled)."""
        annos = dic.get("annotations") or []
        if not annos:
            return self.output
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
            dtype=np.float64,
        ).reshape(-1, 4)
        masks = [a["segmentation"] for a in annos] if "segmentation" in annos[0] else None
        keypoints = (
            np.array([a["keypoints"] for a in annos]).reshape(len(annos), -1, 3)
            if "keypoints" in annos[0]
            else None
        )
        category_ids = [a["category_id"] for a in annos]
        labels = _create_text_labels(
            category_ids,
            None,
            self.metadata.get("thing_classes", None),
            is_crowd=[a.get("iscrowd", 0) for a in annos],
        )
        colors = None
        if self._instance_mode == ColorMode.SEGMENTATION:
            colors = self._class_colors(category_ids)
        return self.overlay_instances(
            boxes=boxes, labels=labels, masks=masks, keypoints=keypoints, assigned_colors=colors
        )

    def overlay_instances(
        self,
        *,
        boxes: Any = None,
        labels: Optional[Sequence[str]] = None,
        masks: Any = None,
        keypoints: Any = None,
        assigned_colors: Optional[Sequence[Any]] = None,
        alpha: float = 0.5,
    ) -> VisImage:
        """Draw N instances; every argument is optional but all given ones must have N items.

        Args:
            boxes: ``Boxes`` or an [N, 4] XYXY array/tensor.
            labels: N strings, placed as described in :meth:`_draw_instance_label`.
            masks: ``BitMasks``, ``PolygonMasks``, or a list with one item per instance: a
                [H, W] bitmap, a list of flat polygons, or a COCO RLE dict.
            keypoints: [N, K, 3] (x, y, score/visibility).
            assigned_colors: N matplotlib colours; default: the palette.
            alpha: mask fill opacity.

        Raises:
            ValueError: the arguments disagree on N.
        """
        boxes_np = self._convert_boxes(boxes) if boxes is not None else None
        masks_list = self._convert_masks(masks) if masks is not None else None
        keypoints_np = self._convert_keypoints(keypoints) if keypoints is not None else None
        counts = {
            name: len(v)
            for name, v in (
                ("boxes", boxes_np),
                ("masks", masks_list),
                ("labels", labels),
                ("keypoints", keypoints_np),
                ("assigned_colors", assigned_colors),
            )
            if v is not None
        }
        if len(set(counts.values())) > 1:
            raise ValueError(f"overlay_instances got different numbers of instances: {counts}")
        num = next(iter(counts.values()), 0)
        if num == 0:
            return self.output
        colors = (
            list(assigned_colors)
            if assigned_colors is not None
            else [_PALETTE[i % len(_PALETTE)] for i in range(num)]
        )

        # Draw large instances first so that small ones stay visible on top.
        if boxes_np is not None:
            areas = np.prod(boxes_np[:, 2:] - boxes_np[:, :2], axis=1)
        elif masks_list is not None:
            areas = np.array([m.sum() for m in masks_list], dtype=np.float64)
        else:
            areas = np.zeros(num)
        for i in np.argsort(-areas, kind="stable").tolist():
            color = colors[i]
            if boxes_np is not None:
                self.draw_box(boxes_np[i], edge_color=color)
            if masks_list is not None:
                self.draw_binary_mask(masks_list[i], color=color, alpha=alpha)
            if labels is not None:
                self._draw_instance_label(
                    labels[i],
                    boxes_np[i] if boxes_np is not None else None,
                    masks_list[i] if masks_list is not None else None,
                    color,
                )
        if keypoints_np is not None:
            for instance_kpts in keypoints_np:
                for x, y, score in instance_kpts:
                    if score > 0.05:
                        self.draw_circle((x, y), color=_PALETTE[0])
        return self.output

    def _draw_instance_label(
        self,
        label: str,
        box: Optional[np.ndarray],
        mask: Optional[np.ndarray],
        color: Any,
    ) -> None:
        """Write one instance's label where it hides the least.

        With a box, the label sits inside its top-left corner; with only a mask, at the
        mask's median pixel. Small or short instances (area < 1000 px or height < 40 px, in
        output pixels) get the label outside: under the box, or beside its top-right corner
        when the box touches the bottom edge. The font grows with the instance's height
        relative to the image, from 0.6 to 1.0 times the default size.
        """
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            position, align = (x0, y0), "left"
        elif mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            x0, y0 = float(xs.min()), float(ys.min())
            x1, y1 = float(xs.max() + 1), float(ys.max() + 1)
            position, align = (float(np.median(xs)), float(np.median(ys))), "center"
        else:
            return  # nothing to attach the label to
        scale = self.output.scale
        small = (x1 - x0) * (y1 - y0) * scale * scale < _SMALL_AREA
        if small or (y1 - y0) * scale < _SHORT_HEIGHT:
            position = (x1, y0) if y1 >= self.output.height - 5 else (x0, y1)
        height_ratio = (y1 - y0) / np.sqrt(self.output.height * self.output.width)
        font_size = float(np.clip((height_ratio - 0.02) / 0.08 + 1, 1.2, 2))
        font_size *= 0.5 * self._default_font_size
        self.draw_text(
            label,
            position,
            font_size=font_size,
            color=self._lighter(color),
            horizontal_alignment=align,
        )

    def draw_box(
        self,
        box_coord: Sequence[float],
        alpha: float = 0.5,
        edge_color: Any = "g",
        line_style: str = "-",
    ) -> VisImage:
        """Outline the box (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (float(v) for v in box_coord)
        width = max(self._default_font_size / 4, 1)
        self.output.ax.add_patch(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=edge_color,
                linewidth=width * self.output.scale,
                alpha=alpha,
                linestyle=line_style,
            )
        )
        return self.output

    def draw_text(
        self,
        text: str,
        position: Tuple[float, float],
        *,
        font_size: Optional[float] = None,
        color: Any = "g",
        horizontal_alignment: str = "center",
        rotation: float = 0,
    ) -> VisImage:
        """Write ``text`` at ``position`` (x, y) on a dark translucent background.

        Text that would stick out of the image is moved just inside it (on small images a
        label at a box near the border would otherwise be cut off).
        """
        font_size = font_size or self._default_font_size
        x, y = position
        artist = self.output.ax.text(
            x,
            y,
            text,
            size=font_size * self.output.scale,
            family="sans-serif",
            bbox={"facecolor": "black", "alpha": 0.8, "pad": 0.7, "edgecolor": "none"},
            verticalalignment="top",
            horizontalalignment=horizontal_alignment,
            color=color,
            zorder=10,
            rotation=rotation,
        )
        self._move_inside_image(artist)
        return self.output

    def _move_inside_image(self, artist: Any) -> None:
        """Shift a text artist (with its background) so that it lies inside the image,
        where it fits; text larger than the image stays at its top/left edge."""
        fig = self.output.fig
        extent = artist.get_window_extent(renderer=self.output.canvas.get_renderer())
        pad = 2.0  # pixels: room for the background box around the glyphs
        # display coordinates: pixels, origin at the bottom-left of the figure
        dx = min(0.0, fig.bbox.width - pad - extent.x1)
        dx = max(dx, pad - extent.x0)
        dy = max(0.0, pad - extent.y0)
        dy = min(dy, fig.bbox.height - pad - extent.y1)
        if dx or dy:
            x, y = artist.get_position()
            # data units are input pixels with y pointing down
            artist.set_position((x + dx / self.output.scale, y - dy / self.output.scale))

    def draw_circle(
        self, circle_coord: Tuple[float, float], color: Any, radius: float = 3
    ) -> VisImage:
        """A filled dot of ``radius`` pixels at (x, y)."""
        self.output.ax.add_patch(Circle(circle_coord, radius=radius, fill=True, color=color))
        return self.output

    def draw_binary_mask(
        self,
        binary_mask: np.ndarray,
        color: Any = None,
        *,
        edge_color: Any = None,
        text: Optional[str] = None,
        alpha: float = 0.5,
        area_threshold: float = 10,
    ) -> VisImage:
        """Fill the mask's regions (holes left open) and outline them.

        Args:
            binary_mask: [H, W] bool/uint8.
            color: fill colour; default the first palette colour.
            edge_color: outline colour; default a darker ``color``.
            text: optional label at the mask's centre.
            alpha: fill opacity.
            area_threshold: regions (contours) with a smaller area are not drawn.
        """
        color = color if color is not None else _PALETTE[0]
        mask = np.asarray(binary_mask).astype(np.uint8)
        rgba = np.zeros(mask.shape + (4,), dtype=np.float32)
        rgba[:, :, :3] = mplc.to_rgb(color)
        rgba[:, :, 3] = (mask > 0) * alpha
        self.output.ax.imshow(rgba, extent=(0, self.output.width, self.output.height, 0))
        for polygon in _mask_to_polygons(mask):
            xy = polygon.reshape(-1, 2)
            if cv2.contourArea(xy.astype(np.float32)) < area_threshold:
                continue
            self.draw_polygon(xy, color, edge_color=edge_color, alpha=0.0)
        if text is not None and mask.any():
            ys, xs = np.nonzero(mask)
            self.draw_text(text, (float(xs.mean()), float(ys.mean())), color=self._lighter(color))
        return self.output

    def draw_polygon(
        self, segment: np.ndarray, color: Any, edge_color: Any = None, alpha: float = 0.5
    ) -> VisImage:
        """Draw a polygon given as [K, 2] points, filled with ``alpha`` and outlined."""
        edge = edge_color if edge_color is not None else self._darker(color)
        self.output.ax.add_patch(
            Polygon(
                np.asarray(segment).reshape(-1, 2),
                fill=True,
                facecolor=mplc.to_rgb(color) + (alpha,),
                edgecolor=mplc.to_rgb(edge) + (1.0,),
                linewidth=max(self._default_font_size // 15 * self.output.scale, 1),
            )
        )
        return self.output

    def get_output(self) -> VisImage:
        """The :class:`VisImage` being drawn on."""
        return self.output

    # ----- helpers ------------------------------------------------------------------
    def _class_colors(self, classes: Sequence[int]) -> Optional[List[Color]]:
        thing_colors = self.metadata.get("thing_colors", None)
        if not thing_colors:
            return None
        return [tuple(v / 255.0 for v in thing_colors[c]) for c in classes]

    def _grayscale_image(self, keep: Optional[np.ndarray]) -> np.ndarray:
        gray = self.img.astype("f4").mean(axis=2, keepdims=True).repeat(3, axis=2)
        if keep is not None:
            gray[keep] = self.img[keep]
        return gray

    @staticmethod
    def _lighter(color: Any) -> Color:
        r, g, b = mplc.to_rgb(color)
        return (min(1.0, r * 0.5 + 0.5), min(1.0, g * 0.5 + 0.5), min(1.0, b * 0.5 + 0.5))

    @staticmethod
    def _darker(color: Any) -> Color:
        r, g, b = mplc.to_rgb(color)
        return (r * 0.7, g * 0.7, b * 0.7)

    def _convert_boxes(self, boxes: Any) -> np.ndarray:
        if isinstance(boxes, Boxes):
            boxes = boxes.tensor
        if torch.is_tensor(boxes):
            boxes = boxes.detach().cpu().numpy()
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be [N, 4] XYXY, got shape {boxes.shape}.")
        return boxes

    def _convert_masks(self, masks: Any) -> List[np.ndarray]:
        h, w = self.output.height, self.output.width
        if isinstance(masks, BitMasks):
            return [m for m in masks.tensor.cpu().numpy().astype(np.uint8)]
        if isinstance(masks, PolygonMasks):
            return [_to_binary_mask(p, h, w) for p in masks.polygons]
        if torch.is_tensor(masks):
            masks = masks.cpu().numpy()
        return [_to_binary_mask(m, h, w) for m in masks]

    def _convert_keypoints(self, keypoints: Any) -> np.ndarray:
        if torch.is_tensor(keypoints):
            keypoints = keypoints.detach().cpu().numpy()
        return np.asarray(keypoints, dtype=np.float64)
