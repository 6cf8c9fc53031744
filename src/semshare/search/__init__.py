"""A trained model at work: gallery index folders (`index build`), queries (`search`) and the HTTP service."""
