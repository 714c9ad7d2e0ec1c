"""Pretrained weights: torchvision state dicts converted to the zoo's variables and back.

`layout` (which torchvision tensor is which zoo leaf), `convert` (the conversion, both ways),
`files` (.pth, .safetensors, .npz), `imagenet` (preprocessing and class names of converted runs),
`torch_check` (the
zoo against torchvision's own code; needs PyTorch), `manifests/` (the key -> shape table of every
torchvision counterpart, made by `python -m experiments.check_torchvision --manifests`). Converted
run directories, fine-tuning's `config.init_from` and export live in `cnn_zoo.train.torchvision_weights`.
"""
