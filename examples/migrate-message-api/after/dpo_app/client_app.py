"""ClientApp: local DPO on the LoRA adapter."""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsafe_plugin import FedSafeSession, TrainSettings, build_tiny_lora_model, encode_pairs, fedsafe_mods, get_adapter_arrays, pad_id, set_adapter_arrays
from fedsafe_plugin.demo_data import node_records

app = ClientApp()


@app.train(mods=fedsafe_mods())
def train(msg: Message, context: Context) -> Message:
    """Train the received adapter on local preference pairs and send it back."""
    fs = FedSafeSession.from_message(msg, context)
    model, tokenizer = build_tiny_lora_model()
    set_adapter_arrays(model, msg.content["arrays"])
    records = fs.sanitize(node_records(context.node_config))
    settings = TrainSettings(steps=int(context.run_config["local-steps"]))
    metrics = fs.train_dpo(model, encode_pairs(tokenizer, records), settings, pad_id(tokenizer))
    metrics["num-examples"] = len(records)
    content = RecordDict({"arrays": get_adapter_arrays(model), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)
