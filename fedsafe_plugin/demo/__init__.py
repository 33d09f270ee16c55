"""`fedsafe demo`: a poisoned federation with and without FedDetox, in Flower's simulation runtime."""
