"""Transfer of self-supervised backbones to detection and segmentation (lessons 09 and 10).

Submodules (import them directly):

- ``coursekit.transfer.yolo``: pretrain a YOLO11/YOLO12 backbone with lightly's DINO pieces, load it
  into a fresh ultralytics model, save a ``.pt`` and fine-tune; YOLO size tables. Needs the
  ``yolo`` extra (ultralytics) and lightly.
- ``coursekit.transfer.segmentation``: patch tokens to feature maps, a linear head and a small
  decoder, freeze-then-unfreeze parameter groups, training and ``mean_iou``.
- ``coursekit.transfer.detection``: an SSL ResNet/ViT as the backbone of a torchvision Faster R-CNN
  through an adapter and a feature pyramid, training and mAP50.

Nothing is imported here, so ``import coursekit.transfer`` never pulls in ultralytics.
"""
