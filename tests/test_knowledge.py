"""The `knowledge` tool: citations (pure), the tools file's knowledge settings (pure), and
Retrieve with real boto3 over HTTP against the local Bedrock's knowledge bases; a throttled
search retried by Temporal on the real dev server."""

import functools
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.knowledge import KnowledgeTool, make_client
from devtools.bedrock import LocalBedrock
from devtools.knowledge import SAMPLE_KB, LocalKnowledgeBases, load_passages, words
from threadchat import texts
from threadchat.citations import name_from_path, source_of
from threadchat.config import BedrockSettings, ConfigError, load_settings
from threadchat.knowledge import KnowledgeSetting, KnowledgeSettingError, knowledge_setting
from threadchat.model import ThreadRef, ToolCall, ToolOutcome, ToolSource

CHANNEL = "C0KNOW"

# -- citations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "metadata", "expected"),
    [
        (
            {"type": "S3", "s3Location": {"uri": "s3://acme-docs/policies/Doc_name.pdf"}},
            None,
            ToolSource("Doc name", "https://acme-docs.s3.amazonaws.com/policies/Doc_name.pdf"),
        ),
        (
            {"type": "S3", "s3Location": {"uri": "s3://b/HR/Travel%20and+expenses_2026.docx"}},
            None,
            ToolSource(
                "Travel and expenses 2026",
                "https://b.s3.amazonaws.com/HR/Travel%2520and%2Bexpenses_2026.docx",
            ),
        ),
        (
            {
                "type": "WEB",
                "webLocation": {"url": "https://docs.example.com/guides/getting-started"},
            },
            None,
            ToolSource("getting-started", "https://docs.example.com/guides/getting-started"),
        ),
        (
            {"type": "WEB", "webLocation": {"url": "https://www.example.com/"}},
            None,
            ToolSource("www.example.com", "https://www.example.com/"),
        ),
        (
            {
                "type": "CONFLUENCE",
                "confluenceLocation": {
                    "url": "https://acme.atlassian.net/wiki/spaces/ENG/pages/123456/On-call+handbook"
                },
            },
            None,
            ToolSource(
                "On-call handbook",
                "https://acme.atlassian.net/wiki/spaces/ENG/pages/123456/On-call+handbook",
            ),
        ),
        (
            {
                "type": "CONFLUENCE",
                "confluenceLocation": {"url": "https://acme.atlassian.net/wiki/pages/98765"},
            },
            None,
            ToolSource("Confluence page", "https://acme.atlassian.net/wiki/pages/98765"),
        ),
        (
            {
                "type": "SHAREPOINT",
                "sharePointLocation": {
                    "url": "https://acme.sharepoint.com/sites/HR/Shared%20Documents/Expense_policy.docx"
                },
            },
            None,
            ToolSource(
                "Expense policy",
                "https://acme.sharepoint.com/sites/HR/Shared%20Documents/Expense_policy.docx",
            ),
        ),
        (
            {
                "type": "SHAREPOINT",
                "sharePointLocation": {
                    "url": "https://acme.sharepoint.com/_layouts/15/Doc.aspx?file=Vacation_policy.docx"
                },
            },
            None,
            ToolSource(
                "Vacation policy",
                "https://acme.sharepoint.com/_layouts/15/Doc.aspx?file=Vacation_policy.docx",
            ),
        ),
        (
            {"type": "CUSTOM", "customDocumentLocation": {"id": "ticket-4711"}},
            None,
            ToolSource("ticket-4711", ""),
        ),
        (
            {"type": "SQL", "sqlLocation": {"query": "SELECT 1"}},
            None,
            ToolSource("Database query", ""),
        ),
        (
            {"type": "S3", "s3Location": {"uri": "s3://b/x/chunk-0001.txt"}},
            {"title": "Security basics", "source_url": "https://intranet.example/security"},
            ToolSource("Security basics", "https://intranet.example/security"),
        ),
        (
            {"type": "S3", "s3Location": {"uri": "s3://b/x/a.pdf"}},
            {"source_url": "javascript:alert(1)"},  # not a link we pass on
            ToolSource("a", "https://b.s3.amazonaws.com/x/a.pdf"),
        ),
        ({"type": "WEB"}, None, ToolSource("Document", "")),
        (
            {"type": "NEWKIND", "newLocation": {"url": "https://x.example/p/Read_me"}},
            None,
            ToolSource("Read me", "https://x.example/p/Read_me"),
        ),
    ],
)
def test_a_location_becomes_a_name_and_a_link(location, metadata, expected):
    assert source_of(location, metadata) == expected


def test_names_from_paths():
    assert name_from_path("/a/b/Doc_name.pdf") == "Doc name"
    assert name_from_path("On-call+handbook") == "On-call handbook"
    assert name_from_path("folder/") == "folder"
    assert name_from_path("Q3%20plan.v2.md") == "Q3 plan.v2"


# -- the tools file's knowledge settings -----------------------------------------------------


def test_the_list_form_takes_the_defaults():
    assert knowledge_setting(["KB12345678"]) == KnowledgeSetting(("KB12345678",), 5, None)


def test_the_mapping_form_sets_results_and_a_filter():
    only = {"andAll": [{"equals": {"key": "a", "value": 1}}, {"in": {"key": "b", "value": [1]}}]}
    setting = knowledge_setting({"ids": ["KB12345678", "KB87654321"], "results": 8, "filter": only})
    assert setting.ids == ("KB12345678", "KB87654321") and setting.results == 8
    assert setting.filter == only


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("KB12345678", "must list"),
        ([], "ids must list"),
        (["kb-1"], "not a knowledge base id"),
        ({"ids": ["KB12345678"], "results": 0}, "results"),
        ({"ids": ["KB12345678"], "results": True}, "results"),
        ({"ids": ["KB12345678"], "top": 3}, "unknown key 'top'"),
        ({"ids": ["KB12345678"], "filter": {"equal": {"key": "a", "value": 1}}}, "'equal'"),
        ({"ids": ["KB12345678"], "filter": {"equals": {"key": "a"}}}, "{key, value}"),
        ({"ids": ["KB12345678"], "filter": {"andAll": [{"equals": {"key": 1, "value": 1}}]}}, "2"),
    ],
)
def test_a_bad_knowledge_setting_says_what_is_wrong(value, problem):
    with pytest.raises(KnowledgeSettingError, match=problem):
        knowledge_setting(value)


def test_the_endpoint_is_configurable_like_bedrock_runtimes():
    env = {"AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": "http://127.0.0.1:9"}
    assert load_settings(env).bedrock.knowledge_endpoint_url == "http://127.0.0.1:9"
    assert load_settings({"AWS_ENDPOINT_URL": "http://h:1"}).bedrock.knowledge_endpoint_url
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"):
        load_settings({"AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": "localhost:1"})


# -- the local knowledge base --------------------------------------------------------------


def test_the_sample_documents_are_passages_with_metadata():
    passages = load_passages()
    assert {p.document for p in passages} >= {"Vacation_policy.md", "On-call_handbook.md"}
    assert all(p.metadata.get("category") for p in passages)
    assert words("How many vacation Days?") == {"vacation", "day"}


# -- the tool, with real boto3 over HTTP ------------------------------------------------------


@pytest.fixture
async def bedrock():
    server = LocalBedrock()
    await server.start()
    yield server
    await server.stop()


def knowledge_tool(bedrock: LocalBedrock, setting: object) -> KnowledgeTool:
    settings = BedrockSettings(knowledge_endpoint_url=bedrock.url, local=True)
    return KnowledgeTool(
        functools.partial(make_client, settings),
        lambda channel: setting if channel == CHANNEL else None,
    )


def retrieve(query: str, channel: str = CHANNEL) -> ToolCall:
    return ToolCall(
        tool_use_id="tu-1",
        server="knowledge",
        name="retrieve",
        arguments={"query": query},
        idempotency_key=uuid.uuid4().hex,
        thread=ThreadRef("T0LOCAL", channel, "1700000000.000100"),
        user="U0ALICE",
    )


async def test_a_search_cites_the_documents_it_found(bedrock):
    tool = knowledge_tool(bedrock, [SAMPLE_KB])
    outcome = await tool.call(retrieve("How many vacation days do we get?"))
    assert outcome.status == "success"
    vacation = "https://acme-knowledge.s3.amazonaws.com/handbook/Vacation_policy.md"
    expenses = "https://acme-knowledge.s3.amazonaws.com/handbook/Expense_policy.md"
    # Five passages from two documents: one number each, [n] is sources[n-1].
    assert outcome.sources == [
        ToolSource("Vacation policy", vacation),
        ToolSource("Expense policy", expenses),
    ]
    first, second = outcome.text.split("\n\n[2] ")
    assert f"\n\n[1] Vacation policy <{vacation}>\n" in first
    assert "28 vacation days" in first and "Sick days" in first
    assert second.startswith(f"Expense policy <{expenses}>") and "50 EUR a day" in second
    [(kb, body)] = bedrock.knowledge.requests
    assert kb == SAMPLE_KB
    assert body["retrievalQuery"] == {"text": "How many vacation days do we get?"}
    assert body["retrievalConfiguration"] == {"vectorSearchConfiguration": {"numberOfResults": 5}}


async def test_results_and_filter_are_the_operators(bedrock):
    only = {"equals": {"key": "category", "value": "engineering"}}
    tool = knowledge_tool(bedrock, {"ids": [SAMPLE_KB], "results": 2, "filter": only})
    outcome = await tool.call(retrieve("what to do when paged on call"))
    assert [s.title for s in outcome.sources] == ["On-call handbook"]
    paged, rotation = outcome.text.split("[1] ")[1].split("\n…\n")
    assert "Acknowledge a page within 5 minutes" in paged and "Rotation" in rotation
    search = bedrock.knowledge.requests[0][1]["retrievalConfiguration"]
    assert search["vectorSearchConfiguration"] == {"numberOfResults": 2, "filter": only}


async def test_nothing_found_is_said(bedrock):
    outcome = await knowledge_tool(bedrock, [SAMPLE_KB]).call(retrieve("zebra xylophone"))
    assert outcome.status == "success" and outcome.sources == []
    assert outcome.text == 'No passages found for "zebra xylophone".'


async def test_an_unknown_or_denied_knowledge_base_is_an_error_told_to_the_model(bedrock):
    outcome = await knowledge_tool(bedrock, ["KBNOTTHERE"]).call(retrieve("vacation"))
    assert outcome.status == "error" and "KBNOTTHERE was not found" in outcome.text
    bedrock.knowledge.denied.add(SAMPLE_KB)
    outcome = await knowledge_tool(bedrock, [SAMPLE_KB]).call(retrieve("vacation"))
    assert outcome.status == "error" and "not allowed" in outcome.text
    assert "bedrock:Retrieve" in outcome.text


async def test_one_base_refusing_leaves_the_others_passages(bedrock):
    outcome = await knowledge_tool(bedrock, [SAMPLE_KB, "KBNOTTHERE"]).call(retrieve("expenses"))
    assert outcome.status == "success" and outcome.sources
    assert "Not searched: knowledge base KBNOTTHERE was not found" in outcome.text


async def test_a_channel_without_bases_gets_no_tool(bedrock):
    tool = knowledge_tool(bedrock, [SAMPLE_KB])
    thread = ThreadRef("T0LOCAL", CHANNEL, "1.0")
    assert [s.name for s in tool.specs(thread, "U0ALICE", None)] == ["retrieve"]
    assert tool.specs(ThreadRef("T0LOCAL", "C0OTHER", "1.0"), "U0ALICE", None) == []
    outcome = await tool.call(retrieve("vacation", channel="C0OTHER"))
    assert outcome.status == "error" and not bedrock.knowledge.requests


async def test_throttling_raises_for_a_retry(bedrock):
    bedrock.knowledge.throttle()
    with pytest.raises(ApplicationError) as raised:
        await knowledge_tool(bedrock, [SAMPLE_KB]).call(retrieve("vacation"))
    assert raised.value.type == "ThrottlingException" and not raised.value.non_retryable


# -- on the dev server: Temporal retries a throttled search ------------------------------------


@workflow.defn(sandboxed=False)
class SearchOnce:
    @workflow.run
    async def run(self, call: ToolCall) -> ToolOutcome:
        return await workflow.execute_activity(
            "search_knowledge",
            call,
            result_type=ToolOutcome,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50)),
        )


async def test_a_throttled_search_is_retried_by_temporal(client, bedrock):
    tool = knowledge_tool(bedrock, [SAMPLE_KB])
    attempts = []

    @activity.defn(name="search_knowledge")
    async def search_knowledge(call: ToolCall) -> ToolOutcome:
        attempts.append(activity.info().attempt)
        return await tool.call(call)

    bedrock.knowledge.throttle(2)
    queue = f"knowledge-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SearchOnce],
        activities=[search_knowledge],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        outcome = await client.execute_workflow(
            SearchOnce.run, retrieve("on call compensation"), id=queue, task_queue=queue
        )
    assert attempts == [1, 2, 3]
    assert outcome.status == "success" and outcome.sources[0].title == "On-call handbook"


def test_the_local_bases_answer_an_empty_query_with_a_validation_error():
    with pytest.raises(Exception, match="must not be empty"):
        LocalKnowledgeBases().retrieve(SAMPLE_KB, {"retrievalQuery": {"text": " "}})


def test_the_sources_line_links_only_what_is_cited_and_cannot_be_forged():
    sources = [
        ToolSource("Runbook (v2)", "https://wiki.example/runbook"),
        ToolSource("Planted", "https://docs.example/a b)[Reset your password](https://evil"),
        ToolSource("Notes", ""),
    ]
    assert texts.sources_line(sources, "Restart it [1].", True) == (
        "Sources: [1] [Runbook v2](https://wiki.example/runbook)"
    )
    line = texts.sources_line(sources, "No numbers.", True)  # none cited: all listed
    assert line.count("](") == 2 and "](https://evil" not in line
    assert "[2] [Planted](https://docs.example/a%20b%29%5BReset%20your%20password%5D%28" in line
    assert line.endswith("[3] Notes")  # no address: the name alone
