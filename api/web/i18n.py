"""Page labels in Chinese (the default) and English. A test checks every label a template
uses exists in both languages."""

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT = "zh"

LABELS: dict[str, tuple[str, str]] = {
    "app": ("留痕", "liuhen"),
    "search": ("检索", "Search"),
    "supervision": ("执法监督", "Supervision"),
    "logout": ("退出", "Log out"),
    "login": ("登录", "Log in"),
    "username": ("用户名", "User name"),
    "password": ("密码", "Password"),
    "times_in": ("时间均为", "Times are in"),
    "back": ("返回", "Back"),
    "role": ("角色", "Role"),
    "role_admin": ("管理员", "Administrator"),
    "role_officer": ("执法人员", "Officer"),
    "role_reviewer": ("复议审查人员", "Reviewer"),
    "role_auditor": ("审计人员", "Auditor"),
    "unit": ("单位", "Unit"),
    "open_case": ("打开案件", "Open case"),
    "case": ("案件", "Case"),
    "cases": ("案件", "Cases"),
    "tokens": ("接口令牌", "API tokens"),
    "tokens_note": (
        "脚本访问接口用的令牌（Authorization: Bearer），只保存其哈希，可随时吊销。",
        "Tokens for scripts (Authorization: Bearer); only their hash is kept; revocable.",
    ),
    "new_token": ("签发新令牌", "Issue a new token"),
    "token_once": (
        "新令牌如下，仅显示这一次，请立即妥善保存：",
        "Your new token, shown this once only: keep it safe now.",
    ),
    "live_tokens": ("有效令牌数", "Live tokens"),
    "revoke_tokens": ("吊销全部令牌", "Revoke all tokens"),
    "tokens_revoked": ("已吊销令牌", "Tokens revoked"),
    "open": ("打开", "Open"),
    "held": ("保全中（原始文件及派生文件不可删除）", "held (no object can be deleted)"),
    "not_held": ("未保全", "not held"),
    "done_link": ("已关联，已记入保管链。", "Linked; recorded in the custody chain."),
    "done_unlink": ("已解除关联，已记入保管链。", "Unlinked; recorded in the custody chain."),
    "done_hold": ("案件已保全。", "The case is held."),
    "done_release": ("案件保全已解除。", "The case's hold is released."),
    "hold_only_note": (
        "管理员可保全或解除保全案件，但不查看证据内容。",
        "Administrators hold and release cases; they do not view the evidence.",
    ),
    "item_id_needed": ("请填写证据编号", "give the item ID"),
    "this_page": ("本页", "this page"),
    "next_page": ("下一页", "Next page"),
    "items": ("证据", "Items"),
    "item": ("证据", "Item"),
    "span": ("时间范围", "Time span"),
    "officers": ("执法人员数", "Officers"),
    "completeness": ("记录完整性", "Completeness of the record"),
    "gaps_found": ("录像间断", "Recording gaps"),
    "no_gaps": ("未发现录像间断", "No recording gaps"),
    "overlaps": ("录像重叠", "Overlaps"),
    "overlap": ("重叠", "overlap"),
    "clock_skew_items": ("设备时钟偏差", "Device clock skew"),
    "gap_threshold": ("间断阈值", "Gap threshold"),
    "seconds": ("秒", "s"),
    "apply": ("应用", "Apply"),
    "timeline": ("时间轴", "Timeline"),
    "gap": ("间断", "gap"),
    "gaps": ("录像间断", "Recording gaps"),
    "over": ("超过", "over"),
    "kind_video": ("视频", "video"),
    "kind_audio": ("音频", "audio"),
    "kind_image": ("照片", "photo"),
    "no_times": ("没有证据带有拍摄时间。", "No item has a capture time."),
    "officer": ("执法人员", "Officer"),
    "from": ("自", "From"),
    "to": ("至", "To"),
    "length": ("时长", "Length"),
    "after": ("此前录像", "After"),
    "before": ("此后录像", "Before"),
    "time_sources": ("时间来源", "Time sources"),
    "device": ("设备", "Device"),
    "clock_offset": ("设备时钟偏差", "Device clock offset"),
    "why": ("原因", "Why"),
    "no_time": ("无拍摄时间", "no capture time"),
    "actions": ("操作", "Actions"),
    "link_item": ("关联证据", "Link an item"),
    "item_id": ("证据编号", "Item ID"),
    "reason": ("理由", "Reason"),
    "link": ("关联", "Link"),
    "unlink_item": ("解除关联", "Unlink an item"),
    "unlink": ("解除", "Unlink"),
    "taken_out": ("已移出本案的证据", "Taken out of this case"),
    "taken_out_note": (
        "这些证据曾关联本案，后被解除关联；导出的证据包同样列出它们。",
        "These items were in this case once and were unlinked; the export package lists them too.",
    ),
    "taken_out_at": ("移出时间", "Taken out"),
    "taken_out_by": ("操作人", "By"),
    "legal_hold": ("法律保全", "Legal hold"),
    "hold": ("保全", "Hold"),
    "release": ("解除保全", "Release"),
    "export": ("导出", "Export"),
    "export_note": (
        "导出案件证据包（BagIt，可离线校验）。",
        "Export the case package (BagIt, verifiable offline).",
    ),
    "export_button": ("导出证据包", "Export package"),
    "waveform": ("波形", "Waveform"),
    "nothing_to_show": (
        "没有可播放或显示的派生文件；可下载原始文件。",
        "Nothing playable or viewable was derived; the original can be downloaded.",
    ),
    "verify": ("校验", "Verify"),
    "download_original": ("下载原始文件", "Download original"),
    "verify_ok": (
        "校验通过：原始文件、派生文件、保管链和日志证明均一致。",
        "Verified: original, derivatives, custody chain and log proofs all match.",
    ),
    "verify_failed": ("校验未通过", "Verification failed"),
    "verify_note": (
        "本次校验已记入保管链。",
        "This verification is recorded in the custody chain.",
    ),
    "place": ("地点", "Place"),
    "map": ("地图", "Map"),
    "track_start": ("轨迹起点", "Track start"),
    "track_end": ("轨迹终点", "Track end"),
    "track_fixes": ("轨迹点", "track fixes"),
    "map_note": ("本地投影绘制，无底图。", "projected locally, no base map."),
    "no_place": ("没有位置信息。", "No position known."),
    "metadata": ("元数据", "Metadata"),
    "captured_at": ("拍摄时间", "Captured at"),
    "captured_end": ("拍摄结束", "Capture end"),
    "utc_offset": ("UTC 偏移", "UTC offset"),
    "received_at": ("接收时间", "Received at"),
    "logged_at": ("入日志时间", "Logged at"),
    "log_index": ("日志序号", "log index"),
    "media_type": ("类型", "Type"),
    "size": ("大小", "Size"),
    "retain_until": ("保存期限至", "Retained until"),
    "problems": ("问题", "Problems"),
    "no_problems": ("无", "None"),
    "derivatives": ("派生文件", "Derivatives"),
    "recipe": ("生成方法", "Recipe"),
    "no_derivatives": ("无派生文件", "No derivatives"),
    "custody": ("保管链", "Chain of custody"),
    "bbox": ("范围", "Area"),
    "status": ("状态", "Status"),
    "results": ("结果", "Results"),
    "nothing_found": ("没有结果。", "Nothing found."),
    "download_csv": ("下载 CSV", "Download CSV"),
    "supervision_note": (
        "按单位和执法人员统计所选日期内拍摄的证据；“录像间断”指同一案件中同一执法人员相邻录像之间的间隔超过阈值；“迟传”指录像结束后超过规定时限才上传。",
        "Items captured in the chosen dates, per unit and officer. A case with gaps has a pause"
        " over the threshold between one officer's recordings; a late upload arrived after the"
        " allowed time since the recording ended.",
    ),
    "unknown": ("未知", "unknown"),
    "recorded_hours": ("录像时长（小时）", "Recorded hours"),
    "cases_with_gaps": ("有间断的案件", "Cases with gaps"),
    "late_uploads": ("迟传", "Late uploads"),
    "skewed_devices": ("时钟偏差设备", "Devices with clock skew"),
    "unprocessable": ("无法处理", "Unprocessable"),
    "total": ("合计", "Total"),
    "items_short": ("条", "items"),
    "item_one": ("条", "item"),
    "has_gap_cases": ("有录像间断的案件（红色）", "has cases with gaps (red)"),
    "item_count": ("证据数", "Items"),
    "recorded_time": ("录像时长", "Recorded"),
    "not_yet_logged": ("尚无签名检查点覆盖", "not yet in a signed checkpoint"),
    "track_item": (
        "GPS 轨迹文件：轨迹见右侧地图，原始文件可下载。",
        "A GPS track: drawn on the map; the original can be downloaded.",
    ),
    # messages
    "csrf_title": ("表单已失效", "Form expired"),
    "csrf_text": (
        "表单缺少有效的安全令牌（CSRF）。请返回、刷新页面后重试。",
        "The form lacks a valid security token (CSRF). Go back, reload the page and try again.",
    ),
    "login_failed": ("用户名或密码错误。", "Wrong user name or password."),
    "login_wait": (
        "登录失败次数过多，请稍后再试（秒）：",
        "Too many failed logins; try again in (s):",
    ),
    "denied_title": ("无权查看", "Not permitted"),
    "denied_case": (
        "您没有查看此案件的权限。此次访问已记录。",
        "You may not view this case. This attempt has been logged.",
    ),
    "denied_item": (
        "您没有查看此证据的权限。此次访问已记录。",
        "You may not view this item. This attempt has been logged.",
    ),
    "denied_action": (
        "您没有执行此操作的权限。此次尝试已记录。",
        "You may not do this. This attempt has been logged.",
    ),
    "denied_supervision": (
        "执法监督页面仅限管理员和审计人员。",
        "The supervision page is for administrators and auditors.",
    ),
    "not_found": ("未找到", "Not found"),
    "no_such_case": ("没有这个案件。", "There is no such case."),
    "no_such_item": ("没有这个证据。", "There is no such item."),
    "bad_input": ("输入有误", "Invalid input"),
}

CODED: dict[str, dict[str, tuple[str, str]]] = {
    "status": {
        "sealed": ("已封存，待处理", "sealed, pending"),
        "ready": ("就绪", "ready"),
        "partial": ("部分处理", "partial"),
        "unprocessable": ("无法处理", "unprocessable"),
    },
    "kind": {
        "video": ("视频", "Video"),
        "audio": ("音频", "Audio"),
        "image": ("照片", "Photo"),
        "other": ("其他文件", "Other file"),
    },
    "source": {
        "gps": ("GPS 时间", "GPS time"),
        "exif_offset": ("EXIF（含时区）", "EXIF with offset"),
        "container": ("容器时间标签", "container tag"),
        "exif_gps_offset": ("EXIF + GPS 推算时区", "EXIF + offset from GPS"),
        "exif_local": ("EXIF（假定时区）", "EXIF, zone assumed"),
        "filename": ("文件名", "file name"),
        "manifest": ("上传清单", "manifest"),
        "none": ("无", "none"),
    },
    "problem": {
        "clock_skew": ("设备时钟偏差", "device clock skew"),
        "device_clock_offset": ("上传时设备时钟偏差", "device clock off at upload"),
        "utc_offset_assumed": ("时区为假定", "time zone assumed"),
        "moov_missing": ("文件不完整（断电）", "file cut short (power loss)"),
        "truncated": ("文件被截断", "truncated"),
    },
    "action": {
        "sealed": ("封存", "sealed"),
        "view": ("查看", "viewed"),
        "download": ("读取", "read"),
        "verify": ("校验", "verified"),
        "link": ("关联案件", "linked to case"),
        "unlink": ("解除关联", "unlinked"),
        "link_track": ("关联轨迹", "track linked"),
        "received_again": ("重复接收", "received again"),
        "denied": ("拒绝访问", "access denied"),
        "hold": ("保全", "held"),
        "release": ("解除保全", "released"),
        "export": ("导出", "exported"),
        "legal_hold": ("法律保全变更", "legal hold changed"),
    },
}


def label(key: str, lang: str) -> str:
    pair = LABELS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


def coded(group: str, code: str | None, lang: str) -> str:
    """A known code's label; the code itself when it has none."""
    if code is None:
        return "—"
    pair = CODED.get(group, {}).get(code)
    if pair is None:
        return code
    return pair[1] if lang == "en" else pair[0]


def from_accept_language(header: str | None) -> str:
    """The first of our languages the browser prefers (by q value), else Chinese."""
    if not header:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > 0:
            ranked.append((-q, i, primary))
    return min(ranked)[2] if ranked else DEFAULT


def duration(seconds: float, lang: str) -> str:
    s = round(seconds)
    if seconds < 10 and seconds != s:
        return f"{seconds:.1f} 秒" if lang != "en" else f"{seconds:.1f} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if lang == "en":
        parts = [
            f"{h} h" if h else "",
            f"{m} min" if m else "",
            f"{sec} s" if sec or s == 0 else "",
        ]
    else:
        parts = [
            f"{h} 小时" if h else "",
            f"{m} 分" if m else "",
            f"{sec} 秒" if sec or s == 0 else "",
        ]
    return " ".join(p for p in parts if p)


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover
