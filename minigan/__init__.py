"""minigan: a small StyleGAN-like GAN and its transfer to a class-conditional GAN by
hyper-modulation.

Laria, Wang, van de Weijer, Raducanu, "Transferring Unconditional to Conditional GANs with
Hyper-Modulation" (arXiv 2112.02219). One idea per file:

    layers.py        equalized-learning-rate Linear/Conv and the channel-width helper
    generator.py     StyleGAN v1-like generator (mapping MLP, constant input, AdaIN, noise)
    discriminator.py strided-conv or residual D, minibatch stddev, multi-head / projection
                     conditioning
    hypermod.py      frozen standardized base kernels modulated per class by a hypernetwork
    selfinit.py      self-initialization: make the modulated generator reproduce the base one, and
                     the check
    losses.py        non-saturating GAN loss, R1, Barlow Twins, NT-Xent
    augment.py       DiffAugment (colour, translation, cutout)
    loop.py          the GAN training loop (D step with lazy R1 and optional SSL, G step, EMA,
                     resume)
    pretrain.py      stage gan-pretrain: the unconditional GAN on the source classes
    quality.py       FD-eval / KID / evaluator accuracy of generated images
    transfer.py      stage gan-transfer: conditional transfer to the target classes, the ablation's
                     switches
"""
