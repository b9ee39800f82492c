"""Connecting to Temporal, and the search attributes conversations are found by."""

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from threadchat.config import TemporalSettings

log = logging.getLogger(__name__)

SLACK_CHANNEL = SearchAttributeKey.for_keyword("SlackChannel")
SLACK_PARTICIPANTS = SearchAttributeKey.for_keyword_list("SlackParticipants")
# When the conversation (not the current run) began: continue-as-new keeps it.
CONVERSATION_STARTED = SearchAttributeKey.for_datetime("ConversationStarted")
# The assistant panel's thread title, written by the model after the first turn.
CONVERSATION_TITLE = SearchAttributeKey.for_text("ConversationTitle")
SEARCH_ATTRIBUTES = {
    SLACK_CHANNEL.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SLACK_PARTICIPANTS.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    CONVERSATION_STARTED.name: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    CONVERSATION_TITLE.name: IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
}
# For `temporal server start-dev --search-attribute NAME=TYPE`.
DEV_SERVER_SEARCH_ATTRIBUTES = [
    "SlackChannel=Keyword",
    "SlackParticipants=KeywordList",
    "ConversationStarted=Datetime",
    "ConversationTitle=Text",
]


async def connect(
    settings: TemporalSettings,
    runtime: Runtime | None = None,
    interceptors: list | None = None,
    data_converter: DataConverter | None = None,
) -> Client:
    """A client; with `runtime`, its metrics (and those of workers on it) are exported, and
    `interceptors` (tracing) apply to it and to workers built on it. `data_converter`
    (threadchat.codec.data_converter: encryption) applies to it and its workers too."""
    return await Client.connect(
        settings.target_host,
        namespace=settings.namespace,
        runtime=runtime or Runtime.default(),
        interceptors=interceptors or [],
        data_converter=data_converter or DataConverter.default,
        **settings.connect_options,
    )


class MissingSearchAttributes(Exception):
    """The namespace lacks the search attributes conversations are started with."""


async def ensure_search_attributes(client: Client) -> None:
    """Create the custom search attributes if the namespace lacks them.

    Without them every new conversation would be refused, so a namespace that lacks them and
    refuses to create them (Temporal Cloud API keys without admin rights) is an error that
    names them; create them once in the Cloud UI or with tcld. If the namespace cannot even be
    asked, the worker carries on: starts will tell.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except Exception as err:
        log.warning("could not list search attributes (%s); assuming they exist", err)
        return
    missing = {
        name: kind
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in existing.custom_attributes
    }
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except Exception as err:
        raise MissingSearchAttributes(
            f"namespace {client.namespace} lacks search attributes "
            f"{', '.join(sorted(missing))} and they could not be created ({err}); "
            f"create them in the namespace"
        ) from None
    log.info("created search attributes %s", ", ".join(sorted(missing)))
