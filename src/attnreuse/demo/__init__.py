"""`attnreuse demo`: the main job, a short tour led by results on real models: a pretrained
all-MiniLM-L6-v2 analysed, converted, distilled and timed; UniForm against EfficientViT-M; ViT-S plans
against the MAC ideal; the attention operators against N. Each stage is cached and can be rerun alone."""
