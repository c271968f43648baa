"""Loading models (dtype, quantisation, device, safetensors), the LoraConfig builder, target modules, shapes."""
