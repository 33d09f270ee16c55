"""ClientApp: local DPO on the LoRA adapter; fedsafe sanitizes the data and guards the reply."""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsafe_plugin import FedSafeSession, encode_pairs, fedsafe_evaluate_mods, fedsafe_mods, get_adapter_arrays, pad_id, preference_accuracy, set_adapter_arrays
from quickstart_feddetox.task import load_local_pairs, load_model, train_settings

app = ClientApp()


@app.train(mods=fedsafe_mods())
def train(msg: Message, context: Context) -> Message:
    """Sanitize local pairs (once per dataset), train the adapter, reply with it."""
    fs = FedSafeSession.from_message(msg, context)
    model, tokenizer = load_model()
    set_adapter_arrays(model, msg.content["arrays"])
    records = fs.sanitize(load_local_pairs(context))
    metrics = fs.train_dpo(model, encode_pairs(tokenizer, records), train_settings(context), pad_id(tokenizer))
    metrics["num-examples"] = len(records)
    content = RecordDict({"arrays": get_adapter_arrays(model), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.evaluate(mods=fedsafe_evaluate_mods())
def evaluate(msg: Message, context: Context) -> Message:
    """How often the global adapter prefers the chosen answer of this node's raw pairs."""
    model, tokenizer = load_model()
    set_adapter_arrays(model, msg.content["arrays"])
    records = load_local_pairs(context)
    metrics = {"pref-accuracy": preference_accuracy(model, tokenizer, records), "num-examples": len(records)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
